r"""Guide families q(z|x), by name: the third declarative axis beside the prior and the likelihood.

Every family starts from the encoder's ``(mu, logvar)`` (the very outputs the hand-written loss uses)
and, except ``diag_normal``, adds a small module of its own, amortised on the encoder's output
(``context = [mu, logvar]``), so q(z|x) stays one forward pass per batch.

==================  ======================================================================  ===========
name                q(z|x)                                                                  KL to N(0, I)
==================  ======================================================================  ===========
``diag_normal``     N(mu, diag(sigma^2)), sigma = exp(logvar / 2) (Kingma & Welling 2013):  closed form
                    today's guide, no extra parameters
``full_normal``     N(mu, L L^T), L lower triangular, diag(L) = sigma (positive by exp),    closed form
                    the strictly lower part a linear head on the context
                    (``MultivariateNormal(scale_tril=L)``)
``lowrank_normal``  N(mu, W W^T + diag(sigma^2)), W (z_dim x rank) a linear head on the     closed form
                    context (``LowRankMultivariateNormal``)
``iaf``             the diagonal Normal pushed through ``flows`` inverse autoregressive     none
                    affine flows (Kingma et al. 2016, the "stable" sigmoid-gated form,
                    eq. 14), each conditioned on the context (Pyro's
                    ``ConditionalAffineAutoregressive``)
==================  ======================================================================  ===========

The heads of ``full_normal`` and ``lowrank_normal`` start at zero, so before training both *are* the
diagonal guide (the tests use it). ``diag_normal`` owns no parameters and draws no random numbers
when built: a VAE with it has today's parameter names, checkpoints and numbers.

**The noise.** Each family's z is a deterministic, differentiable function of standard-normal noise
eps of ``noise_dim`` numbers per sample (:meth:`Posterior.rsample`): z_dim for all but
``lowrank_normal``, whose z = mu + W eps_W + sigma eps_D takes rank + z_dim (torch's own
``LowRankMultivariateNormal.rsample``). :meth:`Posterior.noise` recovers the eps behind a z that the
Pyro guide drew (the same-noise checks, :mod:`vae_pyro.estimators.same_noise`): by solving
(diagonal, triangular), from the flow's own cache of its inputs (``iaf``), or from the noise the
low-rank distribution recorded when it drew z (its z does not determine eps).
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import conditional_affine_autoregressive
from torch import nn
from torch.distributions.lowrank_multivariate_normal import _batch_lowrank_logdet, _batch_lowrank_mahalanobis
from torch.distributions.multivariate_normal import _batch_mahalanobis
from torch.distributions.utils import _standard_normal

from .priors import DiagNormal, StandardNormal, prior_kl
from .registry import Option, Registry

#: every guide family by name (``[guide] family``, ``--guide``); a new family is one class decorated
#: with :func:`register_guide`
GUIDES: Registry[type["Guide"]] = Registry("guide")
register_guide = GUIDES.register
DEFAULT_GUIDE = "diag_normal"

LOG_2PI = math.log(2 * math.pi)
_HALF_LOG_2PI = 0.5 * LOG_2PI


def reparameterize(
    mu: torch.Tensor, logvar: torch.Tensor, num_particles: int = 1, eps: torch.Tensor | None = None
) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I), shape (num_particles, *mu.shape)."""
    std = torch.exp(0.5 * logvar)
    shape = (num_particles,) + tuple(std.shape)
    if eps is None:
        eps = torch.randn(shape, dtype=std.dtype, device=std.device)
    elif tuple(eps.shape) != shape:
        raise ValueError(f"eps has shape {tuple(eps.shape)}, expected {shape} (num_particles, batch, z_dim)")
    return mu + eps * std


def log_normal_diag(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over dimensions, written out by hand."""
    return -0.5 * torch.sum(LOG_2PI + logvar + (z - mu).pow(2) / logvar.exp(), dim=-1)


def log_normal_noise(eps: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log q(z) of z = mu + L eps with diag(L) = exp(logvar / 2), L triangular, written in the noise:
    sum_j [-1/2 log(2 pi) - 1/2 logvar_j - 1/2 eps_j^2] (|det L| = prod_j exp(logvar_j / 2))."""
    return (-_HALF_LOG_2PI - 0.5 * logvar - 0.5 * eps * eps).sum(-1)


# ----------------------------------------------------------------------------------------------
# Normal priors, as (loc, scale): what the Gaussian families' closed-form KL needs


_NORMAL_PRIORS = {
    StandardNormal: lambda prior, like: (torch.zeros_like(like), torch.ones_like(like)),
    DiagNormal: lambda prior, like: (prior.loc, prior.log_scale.exp()),
}


def normal_prior_params(prior, like: torch.Tensor):
    """``(loc, scale)`` of a diagonal-Normal prior (dispatched on the prior's type, nearest class
    first), broadcastable to ``like``; None for any other prior."""
    for cls in type(prior).__mro__:
        if cls in _NORMAL_PRIORS:
            return _NORMAL_PRIORS[cls](prior, like)
    return None


def gaussian_kl_to_diag_normal(mu, scale_sq_rows, log_det, loc_p, scale_p) -> torch.Tensor:
    r"""KL(N(mu, Sigma) || N(m, diag(s^2))) for a full covariance Sigma, from its row sums of squares
    diag(Sigma) (``scale_sq_rows``) and log det Sigma (``log_det``); shape ``mu.shape[:-1]``.

    With d latent dimensions (Rasmussen & Williams 2006, eq. A.23; Kullback 1959):

        E_q[log q] = -d/2 log 2 pi - 1/2 log det Sigma - d/2
        E_q[log p] = -d/2 log 2 pi - 1/2 sum_j log s_j^2 - 1/2 E_q[(z - m)^T S^{-1} (z - m)]
                   = ... - 1/2 [tr(S^{-1} Sigma) + (mu - m)^T S^{-1} (mu - m)]    (S = diag(s^2))

    so KL = 1/2 [tr(S^{-1} Sigma) + (mu - m)^T S^{-1} (mu - m) - d + log det S - log det Sigma], and
    tr(S^{-1} Sigma) = sum_j Sigma_jj / s_j^2 needs only Sigma's diagonal. Against N(0, I):

        KL = 1/2 (tr Sigma + mu^T mu - d - log det Sigma),

    which for a diagonal Sigma = diag(exp(logvar)) is the classic -1/2 sum(1 + logvar - mu^2 - exp(logvar))."""
    var_p = scale_p.pow(2)
    d = mu.shape[-1]
    quad = ((scale_sq_rows + (mu - loc_p).pow(2)) / var_p).sum(-1)
    return 0.5 * (quad - d + torch.log(var_p).sum(-1) - log_det)


# ----------------------------------------------------------------------------------------------
# q(z|x) of one batch


class Posterior:
    """q(z|x) of one batch: the encoder's ``mu``, ``logvar`` (batch shape B, z_dim) and whatever the
    family adds. ``noise_dim``: standard-normal numbers per sample of z."""

    def __init__(self, mu: torch.Tensor, logvar: torch.Tensor):
        self.mu, self.logvar = mu, logvar
        self.noise_dim = mu.shape[-1]

    @property
    def std(self) -> torch.Tensor:
        return torch.exp(0.5 * self.logvar)

    def dist(self) -> dist.TorchDistribution:
        """The Pyro distribution of the guide's ``z`` site: batch shape B, event shape (z_dim,)."""
        raise NotImplementedError

    def draw_noise(self, num_particles: int, eps: torch.Tensor | None) -> torch.Tensor:
        shape = (num_particles,) + tuple(self.mu.shape[:-1]) + (self.noise_dim,)
        if eps is None:
            return torch.randn(shape, dtype=self.mu.dtype, device=self.mu.device)
        if tuple(eps.shape) != shape:
            raise ValueError(
                f"eps has shape {tuple(eps.shape)}, expected {shape} (num_particles, batch, z_dim)"
                + ("" if self.noise_dim == self.mu.shape[-1] else " with rank + z_dim noise")
            )
        return eps

    def rsample(self, num_particles: int = 1, eps: torch.Tensor | None = None) -> torch.Tensor:
        """z from the noise eps (drawn when None), shape (num_particles, B, z_dim), differentiable."""
        raise NotImplementedError

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x), shape z.shape[:-1], written out by hand."""
        raise NotImplementedError

    def log_prob_noise(self, eps: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log q(z|x) at z = :meth:`rsample` (eps), from the noise where that is cheaper (default: log_prob)."""
        return self.log_prob(z)

    def noise(self, z: torch.Tensor, fn) -> torch.Tensor:
        """The eps behind a z that the distribution ``fn`` (this posterior's :meth:`dist`, as the Pyro
        guide drew it) produced: shape (num_particles, B, noise_dim) for z of shape (..., B, z_dim)."""
        raise NotImplementedError

    def detach(self) -> "Posterior":
        """The same q with its parameters detached (the path-derivative estimator's log q)."""
        raise NotImplementedError

    def kl_to_normal(self, loc_p: torch.Tensor, scale_p: torch.Tensor) -> torch.Tensor:
        """KL(q || N(loc_p, diag(scale_p^2))) in closed form, shape B; NotImplementedError without one."""
        raise NotImplementedError

    def closed_form_kl(self, prior) -> torch.Tensor:
        """KL(q || prior) in closed form, shape B: :meth:`kl_to_normal` for a diagonal-Normal prior;
        for any other (or a family without one) ``NotImplementedError(what, why)``: what has no closed
        form ("prior 'mog'", "guide 'iaf'") and why not."""
        params = normal_prior_params(prior, self.mu)
        if params is None:
            raise NotImplementedError(
                f"guide {self.family!r} with prior {prior.name!r}",
                "a Gaussian guide's closed form here is against a diagonal-Normal prior only",
            )
        return self.kl_to_normal(*params)

    #: the registered family that built it and its z_dim as a Python int (:meth:`Guide.from_encoding` sets both)
    family = "guide"
    z_dim: int


class DiagPosterior(Posterior):
    def dist(self):
        return dist.Normal(self.mu, self.std).to_event(1)

    def rsample(self, num_particles=1, eps=None):
        return reparameterize(self.mu, self.logvar, num_particles, eps)

    def log_prob(self, z):
        return log_normal_diag(z, self.mu, self.logvar)

    def log_prob_noise(self, eps, z):
        return log_normal_noise(eps, self.logvar)

    def noise(self, z, fn):
        return (z.reshape(-1, *self.mu.shape) - self.mu) / self.std

    def detach(self):
        return DiagPosterior(self.mu.detach(), self.logvar.detach())

    def kl_to_normal(self, loc_p, scale_p):
        return gaussian_kl_to_diag_normal(self.mu, self.logvar.exp(), self.logvar.sum(-1), loc_p, scale_p)

    def closed_form_kl(self, prior):
        """The prior's own closed form for the diagonal guide (:func:`vae_pyro.priors.prior_kl`, the
        classic formula for N(0, I); torch's registered KL for Laplace), as before guide families."""
        try:
            return prior_kl(prior, self.mu, self.logvar)
        except NotImplementedError:
            why = getattr(prior, "no_closed_form", None) or "torch registers no KL(Normal || this prior)"
            raise NotImplementedError(f"prior {prior.name!r}", why) from None


class ConstantInPython:
    """torch's ``MultivariateNormal.log_prob`` (and the low-rank one's) adds ``self._event_shape[0] *
    math.log(2 * math.pi)``; under ``torch.jit.trace`` (the ``jit_*`` and ``*_graph`` estimators) the
    event size is a traced tensor and that product a *float32* one, 1e-7 nats off in float64, above
    the same-noise tolerance. Here the constant is ``z_dim`` (a Python int, kept through ``expand``)
    times log 2 pi, a Python float; the rest is torch's own formula."""

    z_dim: int

    def expand(self, batch_shape, _instance=None):
        new = super().expand(batch_shape, _instance)
        new.z_dim = self.z_dim
        return new


class _MultivariateNormal(ConstantInPython, dist.MultivariateNormal):
    def log_prob(self, value):
        diff = value - self.loc
        mahalanobis = _batch_mahalanobis(self._unbroadcasted_scale_tril, diff)
        half_log_det = self._unbroadcasted_scale_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return -0.5 * (self.z_dim * LOG_2PI + mahalanobis) - half_log_det


class FullPosterior(Posterior):
    """N(mu, L L^T), ``scale_tril`` = L (B, z_dim, z_dim) with diag(L) = exp(logvar / 2)."""

    def __init__(self, mu, logvar, scale_tril):
        super().__init__(mu, logvar)
        self.scale_tril = scale_tril

    def dist(self):
        q = _MultivariateNormal(self.mu, scale_tril=self.scale_tril)
        q.z_dim = self.z_dim
        return q

    def rsample(self, num_particles=1, eps=None):
        eps = self.draw_noise(num_particles, eps)
        return self.mu + (self.scale_tril @ eps.unsqueeze(-1)).squeeze(-1)

    def _solve(self, z):
        diff = (z - self.mu).unsqueeze(-1)
        tril = self.scale_tril.expand(diff.shape[:-2] + self.scale_tril.shape[-2:])
        return torch.linalg.solve_triangular(tril, diff, upper=False).squeeze(-1)

    def log_prob(self, z):
        return log_normal_noise(self._solve(z), self.logvar)

    def log_prob_noise(self, eps, z):
        return log_normal_noise(eps, self.logvar)

    def noise(self, z, fn):
        return self._solve(z.reshape(-1, *self.mu.shape))

    def detach(self):
        return FullPosterior(self.mu.detach(), self.logvar.detach(), self.scale_tril.detach())

    def kl_to_normal(self, loc_p, scale_p):
        return gaussian_kl_to_diag_normal(self.mu, self.scale_tril.pow(2).sum(-1), self.logvar.sum(-1), loc_p, scale_p)


class RecordingLowRankMultivariateNormal(ConstantInPython, dist.LowRankMultivariateNormal):
    """``LowRankMultivariateNormal`` whose ``rsample`` keeps the noise it drew (``last_noise``,
    [eps_W, eps_D] on the last axis): z = mu + W eps_W + sqrt(D) eps_D does not determine eps, and the
    same-noise checks need the very eps behind the z the Pyro guide drew. The sample is torch's
    formula (``torch/distributions/lowrank_multivariate_normal.py``), its noise drawn as one block of
    rank + z_dim numbers per sample (torch draws eps_W and eps_D separately: one block draws the same
    numbers whether or not the guide is being traced by the JIT)."""

    last_noise: torch.Tensor | None = None

    def rsample(self, sample_shape=torch.Size()):
        shape = self._extended_shape(sample_shape)
        rank = self.cov_factor.shape[-1]
        self.last_noise = _standard_normal(
            shape[:-1] + (rank + shape[-1],), dtype=self.loc.dtype, device=self.loc.device
        )
        eps_w, eps_d = self.last_noise[..., :rank], self.last_noise[..., rank:]
        return (
            self.loc
            + (self._unbroadcasted_cov_factor @ eps_w.unsqueeze(-1)).squeeze(-1)
            + self._unbroadcasted_cov_diag.sqrt() * eps_d
        )

    def log_prob(self, value):
        diff = value - self.loc
        mahalanobis = _batch_lowrank_mahalanobis(
            self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag, diff, self._capacitance_tril
        )
        log_det = _batch_lowrank_logdet(
            self._unbroadcasted_cov_factor, self._unbroadcasted_cov_diag, self._capacitance_tril
        )
        return -0.5 * (self.z_dim * LOG_2PI + log_det + mahalanobis)


class LowRankPosterior(Posterior):
    """N(mu, W W^T + diag(exp(logvar))), ``cov_factor`` = W (B, z_dim, rank)."""

    def __init__(self, mu, logvar, cov_factor):
        super().__init__(mu, logvar)
        self.cov_factor = cov_factor
        self.rank = cov_factor.shape[-1]
        self.noise_dim = self.rank + mu.shape[-1]

    def dist(self):
        q = RecordingLowRankMultivariateNormal(self.mu, cov_factor=self.cov_factor, cov_diag=self.logvar.exp())
        q.z_dim = self.z_dim
        return q

    def rsample(self, num_particles=1, eps=None):
        eps = self.draw_noise(num_particles, eps)
        eps_w, eps_d = eps[..., : self.rank], eps[..., self.rank :]
        return self.mu + (self.cov_factor @ eps_w.unsqueeze(-1)).squeeze(-1) + self.std * eps_d

    def _capacitance_tril(self):
        """Cholesky factor of I_r + W^T D^{-1} W (the matrix determinant lemma and Woodbury's identity)."""
        w_over_d = self.cov_factor / self.logvar.exp().unsqueeze(-1)
        cap = self.cov_factor.transpose(-1, -2) @ w_over_d
        return torch.linalg.cholesky(cap + torch.eye(self.rank, dtype=cap.dtype, device=cap.device))

    def log_prob(self, z):
        r"""-1/2 [d log 2 pi + log det Sigma + r^T Sigma^{-1} r], r = z - mu, Sigma = W W^T + D, with
        log det Sigma = log det D + log det C and r^T Sigma^{-1} r = r^T D^{-1} r - |C_L^{-1} W^T D^{-1} r|^2,
        C = I + W^T D^{-1} W = C_L C_L^T (the matrix determinant lemma and the Woodbury identity)."""
        r = z - self.mu
        r_over_d = r / self.logvar.exp()
        cap_tril = self._capacitance_tril()
        a = self.cov_factor.transpose(-1, -2) @ r_over_d.unsqueeze(-1)
        y = torch.linalg.solve_triangular(cap_tril.expand(a.shape[:-2] + cap_tril.shape[-2:]), a, upper=False)
        mahalanobis = (r * r_over_d).sum(-1) - y.squeeze(-1).pow(2).sum(-1)
        log_det = self.logvar.sum(-1) + 2 * torch.log(torch.diagonal(cap_tril, dim1=-2, dim2=-1)).sum(-1)
        return -0.5 * (self.mu.shape[-1] * LOG_2PI + log_det + mahalanobis)

    def noise(self, z, fn):
        if getattr(fn, "last_noise", None) is None:
            raise ValueError(
                "the low-rank guide's z does not determine its noise, and this distribution "
                "recorded none (it must be the one that drew z)"
            )
        return fn.last_noise.reshape(-1, *self.mu.shape[:-1], self.noise_dim)

    def detach(self):
        return LowRankPosterior(self.mu.detach(), self.logvar.detach(), self.cov_factor.detach())

    def kl_to_normal(self, loc_p, scale_p):
        diag = self.cov_factor.pow(2).sum(-1) + self.logvar.exp()
        log_det = self.logvar.sum(-1) + 2 * torch.log(torch.diagonal(self._capacitance_tril(), dim1=-2, dim2=-1)).sum(
            -1
        )
        return gaussian_kl_to_diag_normal(self.mu, diag, log_det, loc_p, scale_p)


class FlowPosterior(Posterior):
    r"""z_0 = mu + sigma eps, then z_{k} = f_k(z_{k-1}) through the conditioned IAF transforms, and

        log q(z_K|x) = log N(z_0; mu, diag(sigma^2)) - sum_k log |det df_k / dz_{k-1}|

    (Rezende & Mohamed 2015, eq. 6; Kingma et al. 2016, eq. 4 and 14), each log-determinant from the
    transform itself (``log_abs_det_jacobian``: sum of the log scales). The last sample's log q is
    kept: scoring an arbitrary z would need the autoregressive inverse, z_dim network passes."""

    def __init__(self, mu, logvar, transforms):
        super().__init__(mu, logvar)
        self.transforms = transforms
        self._last: tuple | None = None

    def dist(self):
        return dist.TransformedDistribution(dist.Normal(self.mu, self.std).to_event(1), self.transforms)

    def rsample(self, num_particles=1, eps=None):
        eps = self.draw_noise(num_particles, eps)
        z = self.mu + self.std * eps
        log_q = log_normal_noise(eps, self.logvar)
        for t in self.transforms:
            z_next = t(z)
            log_q = log_q - t.log_abs_det_jacobian(z, z_next)
            z = z_next
        self._last = (z, log_q)
        return z

    def log_prob(self, z):
        if self._last is not None and z is self._last[0]:
            return self._last[1]
        return self.dist().log_prob(z)  # the autoregressive inverse (slow; not used by the estimators)

    def noise(self, z, fn):
        for t in reversed(fn.transforms):  # each transform caches the input of its last call
            z = t.inv(z)
        return (z.reshape(-1, *self.mu.shape) - self.mu) / self.std

    def closed_form_kl(self, prior):
        raise NotImplementedError(f"guide {self.family!r}", IAFGuide.no_closed_form)

    def detach(self):
        raise NotImplementedError("a flow's log q with its parameters stopped needs the flow's networks detached too")


# ----------------------------------------------------------------------------------------------
# The families


class Guide(nn.Module):
    """A family of q(z|x): :meth:`posterior` of a batch from the encoder. An ``nn.Module`` so a
    family's own parameters train with the rest (registered in Pyro only if it has any)."""

    name = "guide"
    summary = ""
    #: q's distribution, as the validity reasons name it
    label = "Normal"
    #: why the hand-derived loss has no closed-form KL for this family (None: against Normal priors it has one)
    no_closed_form: str | None = None
    #: why the path-derivative (``stl``) estimator does not apply (None: it does)
    no_path_derivative: str | None = None
    #: the settings of ``[guide]`` this family reads (for messages and the docs)
    uses: tuple[str, ...] = ()

    def __init__(self, z_dim: int, rank: int = 2, flows: int = 2):
        super().__init__()
        self.z_dim, self.rank, self.flows = z_dim, rank, flows

    @property
    def noise_dim(self) -> int:
        """Standard-normal numbers per sample of z (:meth:`Posterior.rsample`)."""
        return self.z_dim

    def posterior(self, encoder: nn.Module, x: torch.Tensor) -> Posterior:
        """q(z|x) of the batch ``x`` through ``encoder`` (the VAE's, or a refined copy of it)."""
        mu, logvar = encoder(x)
        return self.from_encoding(mu, logvar)

    def from_encoding(self, mu: torch.Tensor, logvar: torch.Tensor) -> Posterior:
        q = self._posterior(mu, logvar)
        # a Python int, not mu.shape[-1]: under torch.jit.trace a tensor's size is itself traced
        q.family, q.z_dim = self.name, self.z_dim
        return q

    def _posterior(self, mu: torch.Tensor, logvar: torch.Tensor) -> Posterior:
        raise NotImplementedError

    @staticmethod
    def context(mu, logvar) -> torch.Tensor:
        return torch.cat([mu, logvar], dim=-1)


def _zero_head(n_in: int, n_out: int) -> nn.Linear:
    """A linear head that starts at zero (the family then starts as the diagonal guide)."""
    head = nn.Linear(n_in, n_out)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    return head


@register_guide("diag_normal")
class DiagNormalGuide(Guide):
    """q(z|x) = N(mu, diag(exp(logvar))): the encoder's output as it is (today's guide)."""

    summary = "N(mu, diag(sigma^2)) from the encoder (Kingma & Welling 2013)"

    def _posterior(self, mu, logvar):
        return DiagPosterior(mu, logvar)


@register_guide("full_normal")
class FullNormalGuide(Guide):
    """q(z|x) = N(mu, L L^T): diag(L) = exp(logvar / 2) from the encoder, the z_dim (z_dim - 1) / 2
    entries below it from a linear head on [mu, logvar]."""

    summary = "N(mu, L L^T), Cholesky factor L from the encoder's output (MultivariateNormal)"
    label = "MultivariateNormal"

    def __init__(self, z_dim, rank=2, flows=2):
        super().__init__(z_dim, rank, flows)
        self.head = _zero_head(2 * z_dim, z_dim * (z_dim - 1) // 2)
        rows, cols = torch.tril_indices(z_dim, z_dim, offset=-1)
        #: where the head's outputs go in the flattened z_dim x z_dim factor (row-major, below the diagonal)
        self.register_buffer("_below", rows * z_dim + cols, persistent=False)

    def scale_tril(self, mu, logvar) -> torch.Tensor:
        """L = diag(exp(logvar / 2)) + the head's entries below the diagonal, shape (..., z_dim, z_dim)."""
        lower = self.head(self.context(mu, logvar))
        flat = lower.new_zeros(lower.shape[:-1] + (self.z_dim**2,)).index_copy(-1, self._below, lower)
        return torch.diag_embed(torch.exp(0.5 * logvar)) + flat.unflatten(-1, (self.z_dim, self.z_dim))

    def _posterior(self, mu, logvar):
        return FullPosterior(mu, logvar, self.scale_tril(mu, logvar))


@register_guide("lowrank_normal")
class LowRankNormalGuide(Guide):
    """q(z|x) = N(mu, W W^T + diag(exp(logvar))), W (z_dim x rank) from a linear head on [mu, logvar]."""

    summary = "N(mu, W W^T + diag(sigma^2)), W of rank guide.rank (LowRankMultivariateNormal)"
    label = "LowRankMultivariateNormal"
    uses = ("rank",)

    def __init__(self, z_dim, rank=2, flows=2):
        super().__init__(z_dim, rank, flows)
        self.head = _zero_head(2 * z_dim, z_dim * rank)

    @property
    def noise_dim(self):
        return self.rank + self.z_dim

    def _posterior(self, mu, logvar):
        w = self.head(self.context(mu, logvar)).unflatten(-1, (self.z_dim, self.rank))
        return LowRankPosterior(mu, logvar, w)


@register_guide("iaf")
class IAFGuide(Guide):
    """The diagonal Normal through ``flows`` conditional IAF steps (Kingma et al. 2016), each a MADE
    (hidden 10 z_dim, Pyro's default) on z and the context [mu, logvar], sigmoid-gated ("stable")."""

    summary = "N(mu, diag(sigma^2)) through guide.flows inverse autoregressive flows (Kingma et al. 2016)"
    label = "IAF flow"
    no_closed_form = (
        "a flow's q(z|x) has no closed-form KL to any prior (log q involves the flow's Jacobian at the sampled z)"
    )
    no_path_derivative = (
        "the path-derivative needs log q with every parameter stopped, the flow's "
        "networks included; not implemented for flows"
    )
    uses = ("flows",)

    def __init__(self, z_dim, rank=2, flows=2):
        super().__init__(z_dim, rank, flows)
        self.flow = nn.ModuleList(
            conditional_affine_autoregressive(z_dim, 2 * z_dim, stable=True) for _ in range(flows)
        )

    def _posterior(self, mu, logvar):
        context = self.context(mu, logvar)
        return FlowPosterior(mu, logvar, [f.condition(context) for f in self.flow])


#: the [guide] settings every family is built with (declared, with their help, in :mod:`vae_pyro.spec`)
GUIDE_SETTINGS = {"rank": Option(int, 2, low=1), "flows": Option(int, 2, low=1)}


def build_guide(name: str, z_dim: int, **settings) -> Guide:
    """The guide family ``name`` over ``z_dim`` dimensions, with the ``[guide]`` settings (rank, flows)."""
    return GUIDES[name](z_dim, **settings)
