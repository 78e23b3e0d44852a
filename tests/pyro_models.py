"""Small Pyro models written the way Pyro's examples write them, to check vae_pyro.check_estimators on
models other than the VAE: a sparse gamma deep exponential family (the structure of Pyro's
``examples/sparse_gamma_def.py``, mean-field Gamma guide) and a two-component Gaussian mixture whose
guide samples the assignments (a discrete, non-reparameterisable site, as in Pyro's GMM tutorial)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.infer import config_enumerate


def sparse_gamma_data(n: int = 12, d: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.poisson(3.0 * torch.rand(n, d, generator=g), generator=g)


def sparse_gamma_def(x, k_top: int = 3, k_mid: int = 2):
    """z_top ~ Gamma(a, b), w_top ~ Gamma, z_mid ~ Gamma(a, a / (z_top w_top)), w_bottom ~ Gamma,
    x ~ Poisson(z_mid w_bottom): the two-layer DEF of Ranganath et al. (2015) as Pyro's example has it."""
    n, d = x.shape
    a = torch.tensor(2.0)
    w_top = pyro.sample("w_top", dist.Gamma(a, a).expand([k_top, k_mid]).to_event(2))
    w_bottom = pyro.sample("w_bottom", dist.Gamma(a, a).expand([k_mid, d]).to_event(2))
    with pyro.plate("data", n):
        z_top = pyro.sample("z_top", dist.Gamma(a, a).expand([k_top]).to_event(1))
        z_mid = pyro.sample("z_mid", dist.Gamma(a, a / (z_top @ w_top)).to_event(1))
        pyro.sample("x", dist.Poisson(z_mid @ w_bottom).to_event(1), obs=x)


def sparse_gamma_guide(x, k_top: int = 3, k_mid: int = 2):
    """Mean-field Gamma over every latent, shape and rate learnt (positive), started near the prior."""
    n, d = x.shape

    def gamma(name, shape, event_dim):
        conc = pyro.param(f"{name}_conc", torch.full(shape, 4.0), constraint=constraints.positive)
        rate = pyro.param(f"{name}_rate", torch.full(shape, 4.0), constraint=constraints.positive)
        return pyro.sample(name, dist.Gamma(conc, rate).to_event(event_dim))

    gamma("w_top", (k_top, k_mid), 2)
    gamma("w_bottom", (k_mid, d), 2)
    with pyro.plate("data", n):
        gamma("z_top", (n, k_top), 1)
        gamma("z_mid", (n, k_mid), 1)


def mixture_data(n: int = 20, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    side = torch.randint(0, 2, (n,), generator=g) * 2.0 - 1.0
    return 2.0 * side + torch.randn(n, generator=g)


def mixture_model(x):
    """locs_k ~ N(0, 5^2), assignment_i ~ Categorical(1/2, 1/2), x_i ~ N(locs[assignment_i], 1)."""
    locs = pyro.sample("locs", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    with pyro.plate("data", len(x)):
        assignment = pyro.sample("assignment", dist.Categorical(torch.ones(2) / 2))
        pyro.sample("obs", dist.Normal(locs[assignment], 1.0), obs=x)


def mixture_guide(x):
    """q(locs) Normal (reparameterised), q(assignment_i) Categorical with its own logits: sampled, so
    every ELBO but TraceEnum_ELBO needs a score-function term for the logits' gradient."""
    loc = pyro.param("locs_loc", torch.tensor([-1.5, 1.5]))
    scale = pyro.param("locs_scale", torch.tensor([0.3, 0.3]), constraint=constraints.positive)
    logits = pyro.param("assignment_logits", 0.5 * (x[:, None] * torch.tensor([-1.0, 1.0])))
    pyro.sample("locs", dist.Normal(loc, scale).to_event(1))
    with pyro.plate("data", len(x)):
        pyro.sample("assignment", dist.Categorical(logits=logits))


#: the same guide with the assignments summed out by TraceEnum_ELBO (the other ELBOs ignore the flag)
mixture_guide_enum = config_enumerate(mixture_guide)


def poisson_rates_data(n: int = 20, d: int = 5, seed: int = 0) -> torch.Tensor:
    return torch.poisson(torch.full((n, d), 8.0), generator=torch.Generator().manual_seed(seed))


def poisson_rates(x):
    """rate_j ~ Gamma(2, 0.2) (mean 10), x_ij ~ Poisson(rate_j): a constrained (positive) global latent,
    which an autoguide draws unconstrained and maps back through exp, putting log|du/dz| = -log rate
    in the Delta site's log_density (about -2.1 per rate at the posterior, rate ~ 8)."""
    rate = pyro.sample("rate", dist.Gamma(2.0, 0.2).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Poisson(rate).to_event(1), obs=x)
