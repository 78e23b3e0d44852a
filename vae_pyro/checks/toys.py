r"""Small VAEs whose log p(x) is known exactly, on real (downsampled) MNIST digits.

=================== ===========================================================================
``linear_gaussian``  probabilistic PCA as a VAE (Tipping & Bishop 1999): p(z) = N(0, I),
                     p(x|z) = N(W z + b, s^2 I) with s fixed, on grey-level digits. log p(x),
                     p(z|x) and the best Gaussian encoder are closed-form (:mod:`vae_pyro.checks.exact`).
``bernoulli_1d``     a nonlinear VAE with 1 latent dimension, Bernoulli pixels (binary digits);
``bernoulli_2d``     the same with 2: log p(x) = log \int p(x|z) p(z) dz by quadrature.
=================== ===========================================================================

Each toy has the interface every estimator uses: ``model(x)`` / ``guide(x)`` (the same Pyro program
as :class:`vae_pyro.model.VAE`: plate ``data``, sites ``z`` and ``x``), ``encoder(x) -> (mu,
logvar)``, ``decoder(z)``, ``likelihood.log_prob(out, x)`` / ``.dist(out)``, ``prior.dist(shape)``
and ``config.prior``. They are separate classes, not VAE subclasses, so changes to the MNIST VAE's
construction never change the toys' exact answers.

Why the choices:

* **14x14 digits** (2x2 average pooling of the 28x28 ones): 196 pixels keep the posteriors of the 1-
  and 2-dimensional latents wide enough for a quadrature grid of modest size, and the data are still
  real digits.
* **tanh, not ReLU**, in the nonlinear toys' decoders: quadrature rules converge exponentially fast
  for analytic integrands but only as O(h^2) across a ReLU kink, so the 1e-6-nat agreement between
  n and 2n points needs a smooth decoder.
* **The PPCA decoder is set to its maximum-likelihood value**, which is closed-form: W = U_q (L_q -
  s^2 I)^{1/2}, s^2 = mean of the discarded eigenvalues of the data covariance, b = the data mean.
  Its columns are orthogonal, so W^T W is diagonal and the exact posterior is a *diagonal* Gaussian:
  the mean-field guide can match it exactly, and then the ELBO equals log p(x).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field, replace

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ..data import load_mnist5k
from ..estimators import build_estimator
from ..estimators.analytic import LOG_2PI
from ..likelihoods import build_likelihood
from ..model import VAE
from ..networks import Network
from ..priors import build_prior
from ..train import seed_all, train

TOYS = ("linear_gaussian", "bernoulli_2d", "bernoulli_1d")
TOY_BINARIZATION_SEED = 0


@dataclass
class ToyConfig:
    toy: str
    x_dim: int = 196
    z_dim: int = 2
    hidden: tuple = (64,)
    prior: str = "standard_normal"
    likelihood: str = "bernoulli"
    likelihood_options: dict = field(default_factory=dict)
    kl_weight: float = 1.0  # the toys' exact answers are for the plain ELBO
    guide: str = "diag_normal"  # q(z|x)'s family (vae_pyro.guides)
    guide_options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["hidden"] = list(self.hidden)
        return out


class FixedNormalLikelihood(nn.Module):
    """p(x|z) = N(decoder(z), s^2 I) with s fixed (a buffer, not a parameter). Kept here, not in the
    likelihood registry, so the toy does not compete with a registered ``normal`` likelihood."""

    name = "normal_fixed"
    data_kind = "real"
    out_per_pixel = 1
    input_scale = 1.0

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(scale)))

    def dist(self, mean):
        return dist.Normal(mean, self.scale.expand_as(mean)).to_event(1)

    def log_prob(self, mean, x):
        # -1/2 sum_j [log 2 pi s^2 + (x_j - mean_j)^2 / s^2], written out by hand
        var = self.scale**2
        return -0.5 * (LOG_2PI + torch.log(var) + (x - mean).pow(2) / var).sum(-1)

    def check_data(self, x):
        if not bool(torch.isfinite(x).all()):
            raise ValueError("data for the Normal likelihood must be finite (found nan or inf)")


class LinearEncoder(nn.Module):
    """mu = A x + c, logvar = a free vector: the family that contains the exact PPCA posterior (its
    mean is linear in x, its covariance the same for every x)."""

    def __init__(self, x_dim: int, z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self.mean = nn.Linear(x_dim, z_dim)
        self.logvar = nn.Parameter(torch.zeros(z_dim))

    def forward(self, x):
        mu = self.mean(x)
        return mu, self.logvar.expand_as(mu)


class SmoothEncoder(nn.Module):
    def __init__(self, x_dim: int, hidden: int, z_dim: int):
        super().__init__()
        self.z_dim = z_dim
        self.net = nn.Sequential(nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * z_dim))

    def forward(self, x):
        mu, logvar = self.net(x).chunk(2, dim=-1)
        return mu, logvar


class SmoothDecoder(nn.Module):
    def __init__(self, z_dim: int, hidden: int, x_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))

    def forward(self, z):
        return self.net(z)


class LinearNetwork(Network):
    """PPCA's networks: :class:`LinearEncoder` and a linear decoder (set to the ML solution by
    :func:`build_toy`)."""

    def encoder(self, input_scale):
        return LinearEncoder(self.x_dim, self.z_dim)

    def decoder(self, out_per_pixel):
        return nn.Linear(self.z_dim, self.x_dim)


class SmoothNetwork(Network):
    """One tanh layer of ``hidden[0]`` units each way (smooth, for the quadrature)."""

    def encoder(self, input_scale):
        return SmoothEncoder(self.x_dim, self.hidden[0], self.z_dim)

    def decoder(self, out_per_pixel):
        return SmoothDecoder(self.z_dim, self.hidden[0], self.x_dim)


class ToyVAE(VAE):
    """p(z) p(x|z) and q(z|x) as a Pyro model/guide pair: the MNIST VAE's program and construction
    (``model``, ``guide``, parameter registration, cloning are inherited), with the toys' own parts:
    flat images of ``x_dim`` pixels, their small networks, PPCA's fixed-noise Normal."""

    prefix = "toy"
    _ids = itertools.count()

    def parts(self, config: ToyConfig):
        prior = build_prior(config.prior, config.z_dim, config.x_dim)
        if config.toy == "linear_gaussian":
            likelihood, network = FixedNormalLikelihood(**config.likelihood_options), LinearNetwork
        else:
            likelihood = build_likelihood(config.likelihood, config.x_dim, **config.likelihood_options)
            network = SmoothNetwork
        return likelihood, prior, network((config.x_dim,), config.z_dim, config.hidden)


def with_guide(toy: ToyVAE, guide: str, **guide_options) -> ToyVAE:
    """The toy's model and encoder with the guide family ``guide`` (whose own parameters, if any, start
    fresh), at the toy's dtype and device."""
    new = type(toy)(replace(toy.config, guide=guide, guide_options=guide_options)).to(
        dtype=toy.dtype, device=toy.device
    )
    new.load_state_dict(toy.state_dict(), strict=False)  # the family's own parameters are not the toy's
    new.kl_weight = toy.kl_weight
    return new


# ----------------------------------------------------------------------------------------------
# Data


def pooled_digits(binary: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The 4,000/1,000 embedded MNIST digits at 14x14 (2x2 average of intensities / 255). ``binary``:
    one fixed-seed Bernoulli draw per pixel (static binarization, as for the MNIST VAE)."""
    ds = load_mnist5k()

    def pool(x):
        grey = x.float().div(ds.max_value).reshape(-1, *ds.image_shape)
        return F.avg_pool2d(grey, 2).flatten(1)

    train, test = pool(ds.train_x), pool(ds.test_x)
    if binary:
        gen = torch.Generator().manual_seed(TOY_BINARIZATION_SEED)
        train, test = torch.bernoulli(train, generator=gen), torch.bernoulli(test, generator=gen)
    return train, test


# ----------------------------------------------------------------------------------------------
# Building and fitting


def ppca_fit(x: torch.Tensor, z_dim: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Maximum-likelihood PPCA (Tipping & Bishop 1999, eq. 7-8): ``(W, b, s^2)``, in float64."""
    x = x.double()
    b = x.mean(0)
    cov = (x - b).T @ (x - b) / len(x)
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    evals, evecs = evals.flip(0), evecs.flip(1)
    s2 = float(evals[z_dim:].mean())
    w = evecs[:, :z_dim] * (evals[:z_dim] - s2).clamp_min(0).sqrt()
    return w, b, s2


def build_toy(
    name: str, x_train: torch.Tensor | None = None, *, seed: int = 0, epochs: int | None = None, progress: bool = True
) -> ToyVAE:
    """A toy fitted to its training digits, so the checks run at a trained point.

    ``linear_gaussian``: the decoder is set to the PPCA maximum-likelihood solution (z_dim 4); the
    encoder (initialised at random) is then fitted by Adam on the ELBO with the decoder frozen,
    ``epochs`` (default 10) epochs, so it is close to but not at the exact posterior.
    ``bernoulli_1d`` / ``bernoulli_2d``: encoder and decoder (196-32-z, tanh) fitted together by Adam
    on the ELBO, ``epochs`` (default 15)."""
    if name not in TOYS:
        raise ValueError(f"unknown toy {name!r}; allowed: {', '.join(TOYS)}")
    generator = seed_all(seed)
    if x_train is None:
        x_train, _ = pooled_digits(binary=name != "linear_gaussian")
    if name == "linear_gaussian":
        z_dim = 4
        w, b, s2 = ppca_fit(x_train, z_dim)
        toy = ToyVAE(
            ToyConfig(
                name,
                x_dim=x_train.shape[1],
                z_dim=z_dim,
                hidden=(),
                likelihood="normal_fixed",
                likelihood_options={"scale": math.sqrt(s2)},
            )
        )
        with torch.no_grad():
            toy.decoder.weight.copy_(w)
            toy.decoder.bias.copy_(b)
        params = list(toy.encoder.parameters())
        epochs = 10 if epochs is None else epochs
        lr = 1e-2
    else:
        z_dim = 1 if name == "bernoulli_1d" else 2
        toy = ToyVAE(ToyConfig(name, x_dim=x_train.shape[1], z_dim=z_dim, hidden=(32,)))
        params = list(toy.parameters())
        epochs = 15 if epochs is None else epochs
        lr = 3e-3
    toy.check_data(x_train)
    train(
        toy,
        build_estimator("analytic"),
        x_train,
        epochs=epochs,
        batch_size=100,
        lr=lr,
        generator=generator,
        progress=progress,
        optimizer=torch.optim.Adam(params, lr=lr),
    )
    return toy
