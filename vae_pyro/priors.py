r"""Priors p(z), by name. Each is an ``nn.Module`` (so a learnable prior's parameters train with the
rest) whose ``dist(batch_shape)`` is a Pyro distribution with batch shape ``batch_shape`` and event
shape ``(z_dim,)``.

===================  =====================================================  ======================
name                 p(z)                                                   KL(q(z|x) || p(z))
===================  =====================================================  ======================
``standard_normal``  N(0, I) (Kingma & Welling 2013)                        closed form
``diag_normal``      N(m, diag(s^2)), m and log s learnt                    closed form
``mog``              sum_k pi_k N(m_k, diag(s_k^2)), all learnt             none: log of a sum
``vamp``             (1/K) sum_k q(z | u_k), K learnt pseudo-inputs u_k     none: log of a sum
                     through the encoder (Tomczak & Welling 2018)
``laplace``          prod_j Laplace(0, b)                                   closed form (torch
                                                                             registers Normal||Laplace)
``student_t``        prod_j StudentT(nu, 0, s)                              none registered
===================  =====================================================  ======================

Which estimators stay exact for which prior is in :mod:`vae_pyro.estimators` (``validity``) and in
``docs/validity.md``. Every prior can be *sampled* as well as scored: in ``Trace_ELBO`` the model is
replayed against the guide's z, so only ``log_prob`` is used there, but Pyro samples the model's z
whenever it is run on its own (``pyro.infer.Predictive``, ``poutine.trace(model)``), and a prior
that could not be sampled would break those silently far from here.
"""

from __future__ import annotations

from typing import Callable

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence

from .registry import Option, Registry, resolve_options

PRIORS: Registry[type["Prior"]] = Registry("prior")
register_prior = PRIORS.register

#: prior type -> KL(N(mu, exp(logvar)) || prior) in closed form (see :func:`register_prior_kl`)
_PRIOR_KL: dict[type, Callable] = {}


def register_prior_kl(prior_type: type):
    """Give a prior type its closed-form KL(q(z|x) || p(z)) for the Gaussian guide, the way
    ``torch.distributions.kl.register_kl`` does for pairs of distributions::

        @register_prior_kl(MyPrior)
        def _kl_my_prior(prior, mu, logvar):   # -> tensor of shape mu.shape[:-1]
            ...

    :func:`prior_kl` dispatches on the prior's type, most specific class first."""

    def decorator(fn: Callable) -> Callable:
        _PRIOR_KL[prior_type] = fn
        return fn

    return decorator


def prior_kl(prior, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || prior) summed over latent dimensions, from the function registered
    for the nearest class of ``type(prior)``; ``NotImplementedError`` where none gives a closed form."""
    for cls in type(prior).__mro__:
        if cls in _PRIOR_KL:
            return _PRIOR_KL[cls](prior, mu, logvar)
    raise NotImplementedError(f"no closed-form KL registered for prior {type(prior).__name__}")


def gaussian_kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dimensions (Kingma & Welling 2013,
    appendix B; derived in :mod:`vae_pyro.estimators.analytic`): -1/2 sum(1 + logvar - mu^2 - exp(logvar))."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


def gaussian_kl_diag(
    mu: torch.Tensor, logvar: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor
) -> torch.Tensor:
    """KL(N(mu, v) || N(m, v_p)) summed over latent dimensions, v = exp(logvar), v_p = exp(logvar_p):
    1/2 sum(log v_p - log v + (v + (mu - m)^2) / v_p - 1), the formula above at m = 0, v_p = 1."""
    return 0.5 * torch.sum(logvar_p - logvar + (logvar.exp() + (mu - mu_p).pow(2)) / logvar_p.exp() - 1, dim=-1)


class Prior(nn.Module):
    name = "prior"
    #: declared options (validated by spec files and ``--set prior.KEY=VALUE``)
    options: dict[str, Option] = {}
    #: one line for ``vae-pyro spec list`` and the validity docs
    summary = ""
    #: why the analytic loss has no KL for this prior (None: it has one)
    no_closed_form: str | None = None
    #: True when ``dist`` runs the encoder (VampPrior): the model must then register the encoder too
    needs_encoder = False

    def __init__(self, z_dim: int, x_dim: int | None = None, **options):
        super().__init__()
        self.z_dim, self.x_dim = z_dim, x_dim
        self.opts = resolve_options("prior", self.name, self.options, options)
        # A buffer, so the prior's tensors follow the model's device and dtype.
        self.register_buffer("_anchor", torch.zeros(()))

    def dist(self, batch_shape: torch.Size | tuple = ()) -> dist.TorchDistribution:
        raise NotImplementedError

    def _zeros(self, batch_shape) -> torch.Tensor:
        return self._anchor.new_zeros(tuple(batch_shape) + (self.z_dim,))


@register_prior("standard_normal")
class StandardNormal(Prior):
    """p(z) = N(0, I), the prior of Kingma & Welling (2013)."""

    summary = "N(0, I)"

    def dist(self, batch_shape=()):
        zeros = self._zeros(batch_shape)
        return dist.Normal(zeros, torch.ones_like(zeros)).to_event(1)


@register_prior_kl(Prior)
def _kl_registered_in_torch(prior, mu, logvar):
    """Any prior for which torch registers ``kl_divergence(Normal, prior)`` (``laplace``), used as it is
    rather than re-derived; torch raises ``NotImplementedError`` for the others."""
    q = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)
    return kl_divergence(q, prior.dist(mu.shape[:-1]))


@register_prior_kl(StandardNormal)
def _kl_standard_normal(prior, mu, logvar):
    return gaussian_kl_to_standard_normal(mu, logvar)


@register_prior("diag_normal")
class DiagNormal(Prior):
    """p(z) = N(m, diag(s^2)) with m and log s learnt (initialised at N(0, I)). With the Gaussian
    guide the KL stays in closed form, so this is the smallest change that makes the prior learnable."""

    summary = "N(m, diag(s^2)), m and s learnt"

    def __init__(self, z_dim, x_dim=None, **options):
        super().__init__(z_dim, x_dim, **options)
        self.loc = nn.Parameter(torch.zeros(z_dim))
        self.log_scale = nn.Parameter(torch.zeros(z_dim))

    @property
    def logvar(self) -> torch.Tensor:
        return 2 * self.log_scale

    def dist(self, batch_shape=()):
        shape = tuple(batch_shape) + (self.z_dim,)
        return dist.Normal(self.loc.expand(shape), self.log_scale.exp().expand(shape)).to_event(1)


@register_prior_kl(DiagNormal)
def _kl_diag_normal(prior, mu, logvar):
    return gaussian_kl_diag(mu, logvar, prior.loc, prior.logvar)


def _gaussian_mixture(logits: torch.Tensor, locs: torch.Tensor, scales: torch.Tensor, batch_shape):
    """sum_k softmax(logits)_k N(locs_k, diag(scales_k^2)) with batch shape ``batch_shape``; a
    ``MixtureSameFamily``, so it samples as well as scores (log_prob is a logsumexp over k)."""
    k, z_dim = locs.shape
    batch_shape = tuple(batch_shape)
    mixing = dist.Categorical(logits=logits.expand(batch_shape + (k,)))
    components = dist.Normal(locs.expand(batch_shape + (k, z_dim)), scales.expand(batch_shape + (k, z_dim))).to_event(1)
    return dist.MixtureSameFamily(mixing, components)


@register_prior("mog")
class MixtureOfGaussians(Prior):
    r"""p(z) = sum_k pi_k N(m_k, diag(s_k^2)), K components, weights, means and scales all learnt.

    log p(z) = logsumexp_k [log pi_k + log N(z; m_k, s_k^2)] has no closed-form expectation under a
    Gaussian q, so KL(q || p) is only available by Monte Carlo. Means start at N(0, I) draws (distinct,
    so the components do not stay identical by symmetry), scales at 1, weights uniform."""

    summary = "sum_k pi_k N(m_k, diag(s_k^2)), all learnt"
    options = {"components": Option(int, 10, low=1, help="number of mixture components K")}
    no_closed_form = "KL(Normal || mixture of Gaussians) has no closed form (the log of a sum)"

    def __init__(self, z_dim, x_dim=None, **options):
        super().__init__(z_dim, x_dim, **options)
        k = self.opts["components"]
        self.logits = nn.Parameter(torch.zeros(k))
        self.locs = nn.Parameter(torch.randn(k, z_dim))
        self.log_scales = nn.Parameter(torch.zeros(k, z_dim))

    def dist(self, batch_shape=()):
        return _gaussian_mixture(self.logits, self.locs, self.log_scales.exp(), batch_shape)


@register_prior("vamp")
class VampPrior(Prior):
    r"""The VampPrior of Tomczak & Welling (2018): p(z) = (1/K) sum_k q(z | u_k), the encoder's own
    posterior averaged over K learnt pseudo-inputs u_k (images on the encoder's [0, 1] input scale,
    initialised uniform in [0, 1]).

    The prior needs the encoder, which belongs to the VAE, not to the prior: it is *attached*
    (:meth:`attach`), not made a submodule. A submodule would put the encoder's weights in the
    state dict twice and, through ``pyro.module("..._prior", prior)``, into Pyro's param store under
    a second name; the JIT estimators pass every param-store entry as a separate graph input, so the
    same weight would enter the compiled graph twice. Attached, the weights are registered once (as
    the encoder) and the pseudo-inputs once (as the prior), and both train and both are in the param
    store for the JIT estimators, which is what ``needs_encoder`` tells :class:`vae_pyro.model.VAE`.
    """

    summary = "(1/K) sum_k q(z | u_k), K learnt pseudo-inputs through the encoder"
    options = {"components": Option(int, 50, low=1, help="number of pseudo-inputs K")}
    no_closed_form = "KL(Normal || VampPrior mixture) has no closed form (the log of a sum)"
    needs_encoder = True

    def __init__(self, z_dim, x_dim=None, **options):
        super().__init__(z_dim, x_dim, **options)
        if x_dim is None:
            raise ValueError("the VampPrior needs x_dim, the pixels of its pseudo-inputs")
        self.pseudo_inputs = nn.Parameter(torch.rand(self.opts["components"], x_dim))
        self._encoder = None

    def attach(self, encoder: nn.Module) -> None:
        object.__setattr__(self, "_encoder", encoder)  # bypass nn.Module registration, see above

    def dist(self, batch_shape=()):
        if self._encoder is None:
            raise RuntimeError("VampPrior needs the encoder: call prior.attach(encoder) first")
        mu, logvar = self._encoder.encode_scaled(self.pseudo_inputs)  # (K, z_dim) each
        uniform = torch.zeros(mu.shape[0], dtype=mu.dtype, device=mu.device)
        return _gaussian_mixture(uniform, mu, torch.exp(0.5 * logvar), batch_shape)


@register_prior("laplace")
class LaplacePrior(Prior):
    """p(z) = prod_j Laplace(z_j; 0, b): heavier tails than the Normal, sparser codes. torch registers
    KL(Normal || Laplace), so the KL is exact for the analytic loss and ``TraceMeanField_ELBO``."""

    summary = "prod_j Laplace(0, b)"
    options = {"scale": Option(float, 1.0, low=0.0, help="scale b")}

    def dist(self, batch_shape=()):
        zeros = self._zeros(batch_shape)
        return dist.Laplace(zeros, torch.full_like(zeros, self.opts["scale"])).to_event(1)


@register_prior("student_t")
class StudentTPrior(Prior):
    """p(z) = prod_j StudentT(z_j; nu, 0, s). torch registers no KL(Normal || StudentT) (the integral
    of a Gaussian against log(1 + z^2 / nu) has no closed form), so ``TraceMeanField_ELBO`` silently
    samples the KL here."""

    summary = "prod_j StudentT(nu, 0, s)"
    options = {
        "df": Option(float, 3.0, low=0.0, help="degrees of freedom nu"),
        "scale": Option(float, 1.0, low=0.0, help="scale s"),
    }
    no_closed_form = "torch registers no KL(Normal || StudentT), and it has no closed form"

    def dist(self, batch_shape=()):
        zeros = self._zeros(batch_shape)
        return dist.StudentT(
            torch.full_like(zeros, self.opts["df"]), zeros, torch.full_like(zeros, self.opts["scale"])
        ).to_event(1)


def build_prior(name: str, z_dim: int, x_dim: int | None = None, **options) -> Prior:
    """The prior ``name`` over ``z_dim`` dimensions; ``x_dim``: the pixels of an image (for a prior
    over images, the VampPrior)."""
    return PRIORS[name](z_dim, x_dim, **options)
