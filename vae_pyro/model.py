"""The VAE, written once as a Pyro ``model`` (prior p(z), likelihood p(x|z)) and ``guide`` (encoder
q(z|x)).

One set of ``nn.Module``s serves both worlds: the Pyro estimators run ``model``/``guide``; the
hand-written loss (:mod:`vae_pyro.estimators.analytic`) calls ``encoder``/``decoder`` directly. So every
estimator sees the very same parameters, and a difference between them is a difference of estimator.

    def model(x, beta):                             def guide(x, beta):
        with plate("data", B):                          with plate("data", B):
            with scale(beta):                               mu, logvar = encoder(x)
                z = sample("z", p(z))                       with scale(beta):
            sample("x", p(x | decoder(z)), obs=x)               sample("z", N(mu, exp(logvar / 2)))

(the guide's distribution is its family's, :mod:`vae_pyro.guides`: the diagonal Normal above by
default, or a full-covariance or low-rank Normal, or an IAF flow on top of it).

**The KL weight beta** (beta-VAE, and KL annealing when beta changes during training) turns the
objective into E_q[log p(x|z)] - beta KL(q(z|x) || p(z)). It must scale *both* z sites. Pyro's
``Trace_ELBO`` computes log p(x|z) + log p(z) - log q(z) from each site's own (scaled) log-density,
so scaling the model's z alone would give log p(x|z) + beta log p(z) - log q(z), not the beta-ELBO;
``TraceMeanField_ELBO`` computes -KL(q || p) scaled by the *guide* site's scale
(``scale_and_mask(kl_qp, scale=guide_site["scale"])`` in ``trace_mean_field_elbo.py``), so scaling the
model's z alone would leave it unchanged. Scaling both makes every estimator compute the same
objective: ``Trace_ELBO`` gives log p(x|z) + beta (log p(z) - log q(z)), ``TraceMeanField_ELBO``
gives log p(x|z) - beta KL (or beta times its Monte Carlo fallback), the analytic loss
recon + beta KL. beta is an argument of model and guide, not a constant read inside them, because
Pyro's JIT compiles the model once: a float read inside would be frozen into the compiled graph,
while a tensor argument is a graph input (see :meth:`VAE.kl_weight_arg`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Sequence

import pyro
import torch
from pyro import poutine
from torch import nn

from .datasets import DATASETS, DEFAULT_DATASET
from .guides import DEFAULT_GUIDE, GUIDE_SETTINGS, GUIDES, Guide, Posterior, build_guide
from .likelihoods import Likelihood, build_likelihood
from .networks import Network, build_network
from .priors import Prior, build_prior


@dataclass
class VAEConfig:
    """The model. ``image_shape`` (C, H, W) and ``max_value`` (pixels are 0..max_value) are the
    data's (:mod:`vae_pyro.datasets`; default: the default dataset's); ``x_dim`` is the pixel count
    C*H*W, derived. A config given ``x_dim`` alone (a checkpoint saved before images had a shape)
    takes the default dataset's shape when the count is its, else one flat row of ``x_dim`` pixels."""

    x_dim: int | None = None
    hidden: Sequence[int] = (400,)
    z_dim: int = 20
    prior: str = "standard_normal"
    likelihood: str = "bernoulli"
    prior_options: dict = field(default_factory=dict)
    likelihood_options: dict = field(default_factory=dict)
    #: beta, the weight of KL(q || p) in the objective (1: the ELBO); must be > 0 (poutine.scale)
    kl_weight: float = 1.0
    #: the networks' nonlinearity: "relu" or "tanh" (:data:`vae_pyro.networks.ACTIVATIONS`)
    activation: str = "relu"
    #: the registered network that builds encoder and decoder (:data:`vae_pyro.networks.NETWORKS`)
    network: str = "mlp"
    image_shape: Sequence[int] | None = None
    max_value: int | None = None
    #: the registered guide family q(z|x) (:data:`vae_pyro.guides.GUIDES`) and its settings (rank, flows)
    guide: str = DEFAULT_GUIDE
    guide_options: dict = field(default_factory=dict)

    def __post_init__(self):
        default = DATASETS[DEFAULT_DATASET]
        if self.image_shape is None:
            legacy = self.x_dim is not None and self.x_dim != math.prod(default.image_shape)
            self.image_shape = (1, 1, self.x_dim) if legacy else default.image_shape
        self.image_shape = tuple(self.image_shape)
        if self.x_dim is not None and self.x_dim != math.prod(self.image_shape):
            raise ValueError(f"x_dim {self.x_dim} is not the pixel count of image_shape {self.image_shape}")
        self.x_dim = math.prod(self.image_shape)
        if self.max_value is None:
            self.max_value = default.max_value
        # only the settings the family reads (rank: lowrank_normal, flows: iaf), defaults filled in: a
        # diagonal-guide config, and so its checkpoint, reads as it did before guides had settings
        unknown = set(self.guide_options) - set(GUIDE_SETTINGS)
        if unknown:
            raise ValueError(f"unknown guide option {sorted(unknown)[0]!r}; allowed: {', '.join(GUIDE_SETTINGS)}")
        given = {k: opt.default for k, opt in GUIDE_SETTINGS.items()} | dict(self.guide_options)
        self.guide_options = {k: given[k] for k in GUIDES[self.guide].uses}

    @classmethod
    def from_dict(cls, saved: dict) -> "VAEConfig":
        """The config of a :meth:`to_dict` (a checkpoint's ``model_config``, of any vae-pyro version:
        a field it predates takes its default, e.g. ``activation`` ReLU, ``network`` mlp)."""
        return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})

    def replace(self, **changes) -> "VAEConfig":
        """A copy with ``changes``; changing the images (``image_shape`` or ``x_dim``) re-derives the other."""
        base = self.to_dict()
        if {"image_shape", "x_dim"} & changes.keys():
            del base["image_shape"], base["x_dim"]
        return VAEConfig(**{**base, **changes})

    def to_dict(self) -> dict:
        out = asdict(self)
        out["hidden"], out["image_shape"] = list(self.hidden), list(self.image_shape)
        return out


class VAE(nn.Module):
    """The likelihood, prior and network of a config (:meth:`parts`), and the Pyro program over them."""

    #: Pyro keeps parameters in one global store keyed by name; two VAEs registered under the same name
    #: would silently alias (the JIT estimators read the store). Each instance gets its own prefix.
    prefix = "vae"
    _ids = itertools.count()

    def __init__(self, config: VAEConfig | None = None, **overrides):
        super().__init__()
        config = config or VAEConfig()
        if overrides:
            config = config.replace(**overrides)
        self.config = config
        if not config.kl_weight > 0:
            raise ValueError(
                f"kl_weight must be > 0, got {config.kl_weight!r} (poutine.scale needs a positive "
                "scale; beta = 0 would be a plain autoencoder)"
            )
        likelihood, prior, network = self.parts(config)
        self.likelihood: Likelihood = likelihood
        self.prior: Prior = prior
        self.encoder = network.encoder(self.likelihood.input_scale)
        self.decoder = network.decoder(self.likelihood.out_per_pixel)
        if self.prior.needs_encoder:
            self.prior.attach(self.encoder)
        #: q(z|x)'s family, built last: its parameters (none for ``diag_normal``) and the random numbers
        #: their initialisation draws come after the networks', which therefore start as before
        self.guide_family: Guide = build_guide(
            getattr(config, "guide", DEFAULT_GUIDE), config.z_dim, **getattr(config, "guide_options", {})
        )  # toys: ToyConfig
        #: the current beta; training may anneal it, the checks run at ``config.kl_weight``
        self.kl_weight = float(config.kl_weight)
        self.pyro_prefix = f"{self.prefix}{next(type(self)._ids)}"

    def parts(self, config) -> tuple[Likelihood, Prior, Network]:
        """The likelihood, the prior and the network (whose encoder, then decoder, are built next) of
        ``config``, each from its registry, in this order: the seeded initial weights follow it."""
        likelihood = build_likelihood(config.likelihood, config.x_dim, config.max_value, **config.likelihood_options)
        prior = build_prior(config.prior, config.z_dim, config.x_dim, **config.prior_options)
        network = build_network(config.network, config.image_shape, config.z_dim, config.hidden, config.activation)
        return likelihood, prior, network

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

    def model(self, x: torch.Tensor, kl_weight: float | torch.Tensor | None = None) -> None:
        """p(x, z) = p(z) p(x|z), one z per example, examples conditionally independent; the z site
        scaled by beta = ``kl_weight`` (default ``self.kl_weight``), see the module docstring."""
        self._register("decoder", "prior", "likelihood")
        if self.prior.needs_encoder:  # the VampPrior runs the encoder inside the model
            self._register("encoder")
        with pyro.plate("data", x.shape[0]):
            with poutine.scale(scale=self.kl_weight if kl_weight is None else kl_weight):
                z = pyro.sample("z", self.prior.dist((x.shape[0],)))
            pyro.sample("x", self.likelihood.dist(self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor, kl_weight: float | torch.Tensor | None = None) -> None:
        """q(z|x) of the guide family (default N(mu(x), diag(sigma(x)^2)), sigma = exp(logvar / 2)), a
        vector event in the data plate; scaled by beta like the model's z (``TraceMeanField_ELBO``
        takes the KL's scale from this site)."""
        self._register("encoder", "guide_family")
        with pyro.plate("data", x.shape[0]):
            q = self.posterior(x)
            with poutine.scale(scale=self.kl_weight if kl_weight is None else kl_weight):
                pyro.sample("z", q.dist())

    def posterior(self, x: torch.Tensor, encoder: nn.Module | None = None) -> Posterior:
        """q(z|x) of the batch ``x`` (:class:`vae_pyro.guides.Posterior`), through ``encoder`` (default:
        the VAE's; a refined copy of it for :mod:`vae_pyro.amortization`)."""
        return self.guide_family.posterior(self.encoder if encoder is None else encoder, x)

    def kl_weight_arg(self, x: torch.Tensor) -> torch.Tensor:
        """The current beta as a 0-d tensor on ``x``'s device, to pass to a compiled (JIT) model:
        a tensor argument is an input of the compiled graph, so annealing reaches it. Made by a fill
        kernel: ``torch.tensor(value, device="cuda")`` would be a host-to-device copy that synchronises."""
        return torch.full((), self.kl_weight, dtype=x.dtype, device=x.device)

    # --- helpers -------------------------------------------------------------------------------

    def check_data(self, x: torch.Tensor) -> None:
        self.likelihood.check_data(x)

    def clone(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "VAE":
        """An independent copy (own parameters, own Pyro prefix), optionally moved/cast."""
        # subclasses (the toy models) clone as themselves; cast before loading, so a float64 model's
        # values are not rounded through float32 on the way
        copy = type(self)(self.config).to(device=device or self.device, dtype=dtype or self.dtype)
        copy.load_state_dict(self.state_dict())
        copy.kl_weight = self.kl_weight
        return copy
