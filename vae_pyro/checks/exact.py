r"""Exact log p(x), exact posteriors and exact KLs for the toy models of :mod:`vae_pyro.checks.toys`.

Everything here is in float64 and returns one number per example, in nats.

**Linear-Gaussian (PPCA).** With p(z) = N(0, I) and p(x|z) = N(W z + b, s^2 I),

    p(x)   = N(x; b, C),                        C = W W^T + s^2 I
    p(z|x) = N(m, S),   M = W^T W + s^2 I,      m = M^{-1} W^T (x - b),   S = s^2 M^{-1}

(Bishop 2006, eq. 12.35 and 12.42). For a diagonal Gaussian q = N(mu, diag(v)) everything else is
closed-form too:

    ELBO(q)        = -D/2 log(2 pi s^2) - (|x - W mu - b|^2 + tr(W^T W diag(v))) / (2 s^2) - KL(q || N(0, I))
    KL(q || p(z|x)) = 1/2 [tr(S^{-1} diag(v)) + (m - mu)^T S^{-1} (m - mu) - d + log det S - sum log v]

and the diagonal Gaussian that minimises KL(q || p(z|x)) has mu = m and v_i = 1 / (S^{-1})_ii. The
three formulas share no code path, so ``ELBO == log p(x) - KL`` is a real identity test.

**Guide families** (:mod:`vae_pyro.guides`). Rotating the decoder, W -> W R, leaves p(x) unchanged
and makes S a full matrix (:func:`rotate_linear_decoder`). A ``full_normal`` guide then still
contains the exact posterior (:func:`set_optimal_full_encoder`: mean m, Cholesky factor chol(S)),
where log p(x, z) - log q(z|x) = log p(x) for *every* z and every estimator equals log p(x) to
float rounding; the best diagonal guide (above) is left with the gap KL(q || p(z|x)) > 0.

**Nonlinear toys (1 or 2 latent dimensions).** log p(x) = log \int p(x|z) p(z) dz on a tensor grid:

1. a coarse scan over [-R, R]^d (shared by all examples; R = 8: the prior puts 1.2e-15 of its mass
   outside per dimension) finds, per example, the box where log p(x, z) is within ``LOG_WINDOW``
   nats of its maximum, widened by ``MARGIN_CELLS`` coarse cells;
2. the midpoint rule with n points per dimension on that box, evaluated as a logsumexp.

For an analytic integrand decaying to e^-40 of its peak at the box's edges, the midpoint rule's error
falls like exp(-c n^2 h^2)-ish (it is spectrally accurate, like the trapezoid rule on periodic
functions), so results at n and 2n that agree to 1e-6 nats mean both are accurate to far better than
that; :func:`quadrature_log_px` returns both, and the largest log-density on the box's boundary
relative to the peak (must be <= ``BOUNDARY_TOL`` = -20 for the truncation to be negligible: the
edge cells then carry < e^-20 of the peak's density).

KL(q(z|x) || p(z|x)) = E_q[log q(z|x) - log p(x, z)] + log p(x) is computed by Gauss-Hermite
quadrature under q (n_gh nodes per dimension), with log p(x) from the grid: an estimate of the
KL that uses no Monte Carlo and none of the estimators' code.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from tqdm.auto import tqdm

from ..estimators.analytic import LOG_2PI, log_normal_diag
from ..likelihoods import BernoulliLikelihood

R = 8.0
COARSE_POINTS = 321  # per dimension in the coarse scan: spacing 0.05, below the posterior s.d. (>= 0.09 here)
LOG_WINDOW = 40.0
MARGIN_CELLS = 3
BOUNDARY_TOL = -20.0  # log-density on the box's edge relative to the peak (checked by ground_truth)


# ----------------------------------------------------------------------------------------------
# Linear-Gaussian


def _ppca_parts(toy):
    w = toy.decoder.weight.detach().double()  # (D, d)
    b = toy.decoder.bias.detach().double()  # (D,)
    s2 = float(toy.likelihood.scale) ** 2
    return w, b, s2


@torch.no_grad()
def linear_gaussian_log_px(toy, x: torch.Tensor) -> torch.Tensor:
    """log N(x; b, W W^T + s^2 I) per example, by a Cholesky factor of the D x D covariance."""
    w, b, s2 = _ppca_parts(toy)
    x = x.double()
    cov = w @ w.T + s2 * torch.eye(len(b), dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)
    r = torch.linalg.solve_triangular(chol, (x - b).T, upper=False)  # (D, B)
    log_det = 2 * torch.log(torch.diagonal(chol)).sum()
    return -0.5 * (len(b) * LOG_2PI + log_det + r.pow(2).sum(0))


@torch.no_grad()
def linear_gaussian_posterior(toy, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(m, S)``: the exact posterior mean per example (B, d) and the covariance (d, d), shared."""
    w, b, s2 = _ppca_parts(toy)
    m_mat = w.T @ w + s2 * torch.eye(w.shape[1], dtype=torch.float64)
    mean = torch.linalg.solve(m_mat, w.T @ (x.double() - b).T).T
    return mean, s2 * torch.linalg.inv(m_mat)


def diagonalize_linear_decoder(toy) -> None:
    """Rotate the latent space so that W^T W is diagonal to working precision: W -> U S (from the SVD
    W = U S V^T). p(x) depends on W only through W W^T = U S^2 U^T, so log p(x) is unchanged; the
    PPCA solution is already of this form, but storing it in float32 leaves off-diagonal W^T W terms
    of ~1e-7 relative, enough to make the exact posterior not quite diagonal. Call before
    :func:`set_optimal_linear_encoder` (the rotation may permute latents, so a fitted encoder no
    longer matches)."""
    u, s, _ = torch.linalg.svd(toy.decoder.weight.detach().double(), full_matrices=False)
    with torch.no_grad():
        toy.decoder.weight.copy_(u * s)


def set_optimal_linear_encoder(toy) -> None:
    """Set the linear encoder to the diagonal Gaussian closest to p(z|x) in KL(q || p): mean
    m = M^{-1} W^T (x - b) (linear in x), variances 1 / diag(S^{-1}). For PPCA's maximum-likelihood W
    (orthogonal columns) S is diagonal and this q *is* the posterior."""
    w, b, s2 = _ppca_parts(toy)
    m_mat = w.T @ w + s2 * torch.eye(w.shape[1], dtype=torch.float64)
    a = torch.linalg.solve(m_mat, w.T)  # (d, D)
    precision = m_mat / s2  # S^{-1}
    with torch.no_grad():
        toy.encoder.mean.weight.copy_(a)
        toy.encoder.mean.bias.copy_(-(a @ b))
        toy.encoder.logvar.copy_(-torch.log(torch.diagonal(precision)))


def rotate_linear_decoder(toy, seed: int = 0) -> None:
    """W -> W R with R a seeded random rotation. p(x) depends on W only through W W^T = W R R^T W^T,
    so log p(x) is unchanged, but W^T W is no longer diagonal: the exact posterior covariance
    S = s^2 (R^T W^T W R + s^2 I)^{-1} is then a full matrix, which a diagonal guide cannot match
    and a full-covariance one can."""
    d = toy.decoder.weight.shape[1]
    gen = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    with torch.no_grad():
        toy.decoder.weight.copy_(toy.decoder.weight.detach().double() @ rotation)


def set_optimal_full_encoder(toy) -> None:
    """Set a ``full_normal`` toy's guide to the exact posterior: the linear encoder's mean m =
    M^{-1} W^T (x - b), and L = chol(S), its diagonal as the encoder's exp(logvar / 2) (logvar = 2 log
    L_jj, the same for every x) and the entries below it as the guide head's bias (weight zero)."""
    w, b, s2 = _ppca_parts(toy)
    m_mat = w.T @ w + s2 * torch.eye(w.shape[1], dtype=torch.float64)
    a = torch.linalg.solve(m_mat, w.T)
    tril = torch.linalg.cholesky(s2 * torch.linalg.inv(m_mat))
    rows, cols = torch.tril_indices(w.shape[1], w.shape[1], offset=-1)
    head = toy.guide_family.head
    with torch.no_grad():
        toy.encoder.mean.weight.copy_(a)
        toy.encoder.mean.bias.copy_(-(a @ b))
        toy.encoder.logvar.copy_(2 * torch.log(torch.diagonal(tril)))
        head.weight.zero_()
        head.bias.copy_(tril[rows, cols])


@torch.no_grad()
def linear_gaussian_posterior_log_prob(toy, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(z|x) of the exact posterior N(m, S), for z (..., B, d) -> (..., B), with torch's
    ``MultivariateNormal`` (no code shared with the guides' densities)."""
    mean, cov = linear_gaussian_posterior(toy, x)
    return torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(z.double())


@torch.no_grad()
def linear_gaussian_elbo(toy, x: torch.Tensor) -> torch.Tensor:
    """The exact ELBO of the toy's current encoder, per example (closed form, see module doc)."""
    w, b, s2 = _ppca_parts(toy)
    x = x.double()
    with torch.no_grad():
        mu, logvar = (t.double() for t in toy.encoder(x.to(toy.dtype)))
    v = logvar.exp()
    resid = x - mu @ w.T - b
    expected_log_lik = -0.5 * len(b) * math.log(2 * math.pi * s2) - (
        resid.pow(2).sum(-1) + (v * (w * w).sum(0)).sum(-1)
    ) / (2 * s2)
    kl_prior = 0.5 * (v + mu.pow(2) - 1 - logvar).sum(-1)
    return expected_log_lik - kl_prior


@torch.no_grad()
def linear_gaussian_kl_to_posterior(toy, x: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || p(z|x)) per example, between the encoder's diagonal Gaussian and the exact one."""
    mean, cov = linear_gaussian_posterior(toy, x)
    with torch.no_grad():
        mu, logvar = (t.double() for t in toy.encoder(x.to(toy.dtype)))
    prec = torch.linalg.inv(cov)
    d = mean.shape[1]
    diff = mean - mu
    trace_term = (torch.diagonal(prec) * logvar.exp()).sum(-1)
    maha = torch.einsum("bi,ij,bj->b", diff, prec, diff)
    return 0.5 * (trace_term + maha - d + torch.logdet(cov) - logvar.sum(-1))


@torch.no_grad()
def linear_gaussian_elbo_full(toy, x: torch.Tensor) -> torch.Tensor:
    """The exact ELBO of a ``full_normal`` toy's current guide N(mu, L L^T), per example:
    -D/2 log(2 pi s^2) - (|x - W mu - b|^2 + tr(W^T W L L^T)) / (2 s^2) - KL(q || N(0, I)), the KL from
    torch's ``kl_divergence(MultivariateNormal, MultivariateNormal)`` (not the guides' formula)."""
    w, b, s2 = _ppca_parts(toy)
    x = x.double()
    q = toy.posterior(x.to(toy.dtype))
    mu, tril = q.mu.double(), q.scale_tril.double()
    resid = x - mu @ w.T - b
    trace_term = ((w @ tril).pow(2)).sum((-1, -2))  # tr(W L L^T W^T)
    expected_log_lik = -0.5 * len(b) * math.log(2 * math.pi * s2) - (resid.pow(2).sum(-1) + trace_term) / (2 * s2)
    eye = torch.eye(mu.shape[-1], dtype=torch.float64)
    kl_prior = torch.distributions.kl_divergence(
        torch.distributions.MultivariateNormal(mu, scale_tril=tril),
        torch.distributions.MultivariateNormal(torch.zeros_like(mu), eye),
    )
    return expected_log_lik - kl_prior


# ----------------------------------------------------------------------------------------------
# Quadrature for the nonlinear toys


def log_joint(toy, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """log p(x, z) = log p(x|z) + log p(z), for x (B, D) and z (B, G, d) -> (B, G)."""
    log_lik = toy.likelihood.log_prob(toy.decoder(z), x[:, None, :])
    return log_lik + toy.prior.dist(z.shape[:-1]).log_prob(z)


def _log_joint_fast(toy, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """:func:`log_joint`, with the Bernoulli log-likelihood as x . l - sum softplus(l) (see
    :func:`_shared_grid_log_lik`): the same number, fewer passes over the (B, G, D) logits."""
    if not isinstance(toy.likelihood, BernoulliLikelihood):
        return log_joint(toy, x, z)
    logits = toy.decoder(z)
    log_lik = torch.einsum("bd,bgd->bg", x, logits) - torch.nn.functional.softplus(logits).sum(-1)
    return log_lik + toy.prior.dist(z.shape[:-1]).log_prob(z)


def _grid(lo: torch.Tensor, hi: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Midpoints of an n^d grid on per-example boxes [lo, hi] (B, d): points (B, n^d, d) and the
    log cell volume (B,)."""
    h = (hi - lo) / n  # (B, d)
    steps = torch.arange(n, dtype=lo.dtype) + 0.5
    axes = [lo[:, i, None] + steps * h[:, i, None] for i in range(lo.shape[1])]  # d x (B, n)
    if len(axes) == 1:
        points = axes[0][:, :, None]
    else:
        mesh = torch.stack(torch.meshgrid(steps, steps, indexing="ij"), -1).reshape(-1, 2)  # (n^2, 2)
        points = lo[:, None, :] + mesh[None] * h[:, None, :]
    return points, torch.log(h).sum(-1)


def _shared_grid_log_lik(toy, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """log p(x|z) for every example x (B, D) at every point of one shared grid (G, d) -> (B, G).
    The decoder runs once on the grid; for Bernoulli pixels, log p(x|z) = x . l - sum softplus(l)
    with l the logits (x log sigmoid(l) + (1 - x) log sigmoid(-l), rearranged), one matrix product
    for all examples."""
    out = toy.decoder(grid)  # (G, D)
    if isinstance(toy.likelihood, BernoulliLikelihood):
        return x @ out.T - torch.nn.functional.softplus(out).sum(-1)
    return torch.stack([toy.likelihood.log_prob(out, xi) for xi in x])


def _coarse_boxes(toy, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = toy.config.z_dim
    axis = torch.linspace(-R, R, COARSE_POINTS, dtype=torch.float64)
    h = float(axis[1] - axis[0])
    grid = axis[:, None] if d == 1 else torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    lj = _shared_grid_log_lik(toy, x, grid) + toy.prior.dist(grid.shape[:1]).log_prob(grid)  # (B, G)
    keep = lj >= lj.max(1, keepdim=True).values - LOG_WINDOW
    big = torch.tensor(float("inf"), dtype=torch.float64)
    lo = torch.where(keep[..., None], grid[None], big).amin(1)
    hi = torch.where(keep[..., None], grid[None], -big).amax(1)
    return (lo - MARGIN_CELLS * h).clamp_min(-R), (hi + MARGIN_CELLS * h).clamp_max(R)


@torch.no_grad()
def quadrature_log_px(toy, x: torch.Tensor, n: int = 48, chunk: int = 8, progress: bool = False) -> dict:
    """log p(x) per example by the midpoint rule at n and at 2n points per dimension (float64).

    Returns ``log_px`` (at 2n), ``log_px_n`` (at n), ``max_abs_diff`` (the largest |difference|
    between them, nats) and ``boundary_rel`` (the largest log p(x, z) on any box's edge cells minus
    that example's peak: how much the box truncates)."""
    toy = toy.clone(dtype=torch.float64)
    x = x.double()
    lo, hi = _coarse_boxes(toy, x)
    results = {}
    boundary = -float("inf")
    bar = tqdm(
        total=2 * -(-len(x) // chunk),
        desc="exact log p(x): quadrature",
        unit="batch",
        disable=not progress,
        leave=False,
    )
    for m in (n, 2 * n):
        out = []
        for i in range(0, len(x), chunk):
            bar.update(1)
            points, log_cell = _grid(lo[i : i + chunk], hi[i : i + chunk], m)
            lj = _log_joint_fast(toy, x[i : i + chunk], points)  # (b, m^d)
            out.append(torch.logsumexp(lj, 1) + log_cell)
            if m == 2 * n:
                edge = lj.reshape(len(lj), *([m] * toy.config.z_dim))
                faces = [edge.select(k + 1, j) for k in range(toy.config.z_dim) for j in (0, m - 1)]
                top = torch.stack([f.reshape(len(lj), -1).amax(1) for f in faces], 1).amax(1)
                boundary = max(boundary, float((top - lj.amax(1)).max()))
        results[m] = torch.cat(out)
    bar.close()
    return {
        "log_px": results[2 * n],
        "log_px_n": results[n],
        "n": n,
        "max_abs_diff": float((results[2 * n] - results[n]).abs().max()),
        "boundary_rel": boundary,
        "box_lo": lo,
        "box_hi": hi,
    }


@torch.no_grad()
def gauss_hermite_elbo(toy, x: torch.Tensor, n_gh: int = 40, chunk: int = 16) -> torch.Tensor:
    """E_{q(z|x)}[log p(x, z) - log q(z|x)] per example by Gauss-Hermite quadrature under q (the
    exact ELBO of the current encoder, no Monte Carlo), float64."""
    toy = toy.clone(dtype=torch.float64)
    x = x.double()
    t, w = np.polynomial.hermite.hermgauss(n_gh)
    t, w = torch.tensor(t), torch.tensor(w) / math.sqrt(math.pi)
    d = toy.config.z_dim
    if d == 1:
        nodes, weights = t[:, None], w
    else:
        nodes = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
        weights = (w[:, None] * w[None, :]).reshape(-1)
    out = []
    for i in range(0, len(x), chunk):
        xb = x[i : i + chunk]
        mu, logvar = toy.encoder(xb)
        z = mu[:, None, :] + math.sqrt(2) * torch.exp(0.5 * logvar)[:, None, :] * nodes[None]  # (b, G, d)
        f = log_joint(toy, xb, z) - log_normal_diag(z, mu[:, None, :], logvar[:, None, :])
        out.append((f * weights).sum(1))
    return torch.cat(out)
