"""The VAE, written once as a Pyro ``model`` (prior p(z), likelihood p(x|z)) and ``guide`` (encoder
q(z|x)).

One set of ``nn.Module``s serves both worlds: the Pyro estimators run ``model``/``guide``; the
hand-written loss (:mod:`vae_pyro.analytic`) calls ``encoder``/``decoder`` directly. So every
estimator sees the very same parameters, and a difference between them is a difference of estimator.

    def model(x):                                   def guide(x):
        with plate("data", B):                          with plate("data", B):
            z = sample("z", p(z))                           mu, logvar = encoder(x)
            sample("x", p(x | decoder(z)), obs=x)           sample("z", N(mu, exp(logvar / 2)))
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Sequence

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from .likelihoods import Likelihood, build_likelihood
from .networks import Decoder, Encoder
from .priors import Prior, build_prior

# Pyro keeps parameters in one global store keyed by name; two VAEs registered under the same name
# would silently alias (the JIT estimators read the store). Each instance gets its own prefix.
_instance_ids = itertools.count()


@dataclass
class VAEConfig:
    x_dim: int = 784
    hidden: Sequence[int] = (400,)
    z_dim: int = 20
    prior: str = "standard_normal"
    likelihood: str = "bernoulli"
    prior_options: dict = field(default_factory=dict)
    likelihood_options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out


class VAE(nn.Module):
    def __init__(self, config: VAEConfig | None = None, **overrides):
        super().__init__()
        config = config or VAEConfig()
        if overrides:
            config = VAEConfig(**{**config.to_dict(), **overrides})
        self.config = config
        self.likelihood: Likelihood = build_likelihood(config.likelihood, **config.likelihood_options)
        self.prior: Prior = build_prior(config.prior, config.z_dim, **config.prior_options)
        self.encoder = Encoder(config.x_dim, config.hidden, config.z_dim)
        self.decoder = Decoder(config.x_dim, config.hidden, config.z_dim, self.likelihood.out_per_pixel)
        self.pyro_prefix = f"vae{next(_instance_ids)}"

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def _register(self, *names: str) -> None:
        for name in names:
            module = getattr(self, name)
            if any(True for _ in module.parameters()):
                pyro.module(f"{self.pyro_prefix}_{name}", module)

    # --- the probabilistic program -------------------------------------------------------------

    def model(self, x: torch.Tensor) -> None:
        """p(x, z) = p(z) p(x|z), one z per example, examples conditionally independent."""
        self._register("decoder", "prior", "likelihood")
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior.dist((x.shape[0],)))
            pyro.sample("x", self.likelihood.dist(self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """q(z|x) = N(mu(x), diag(sigma(x)^2)), sigma = exp(logvar / 2)."""
        self._register("encoder")
        with pyro.plate("data", x.shape[0]):
            mu, logvar = self.encoder(x)
            pyro.sample("z", dist.Normal(mu, torch.exp(0.5 * logvar)).to_event(1))

    # --- helpers -------------------------------------------------------------------------------

    def check_data(self, x: torch.Tensor) -> None:
        self.likelihood.check_data(x)

    def clone(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "VAE":
        """An independent copy (own parameters, own Pyro prefix), optionally moved/cast."""
        copy = VAE(self.config)
        copy.load_state_dict(self.state_dict())
        return copy.to(device=device or self.device, dtype=dtype or self.dtype)
