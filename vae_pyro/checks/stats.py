"""The statistics every check uses: means and standard errors, two-sample z-scores, Monte Carlo draws
of an estimator's value, gradient moments and their projections onto fixed (pilot) directions. Used by
the agreement engine (:mod:`.agreement`), the ground-truth checks, gradient quality and the
any-model checks alike, so each number is computed one way."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .. import distributed
from ..estimators import build_estimator


def mean_se(values) -> tuple[float, float]:
    """Mean and standard error sd / sqrt(n) (unbiased sd) of a list or tensor, in float64."""
    t = torch.as_tensor(values, dtype=torch.float64)
    return float(t.mean()), float(t.std(unbiased=True) / math.sqrt(len(t)))


def value_draws(draw: Callable[[], float], draws: int, progress=None) -> list[float]:
    """``draws`` independent values of ``draw()``. Draw r is seeded by its index
    (:func:`~vae_pyro.distributed.seeded_draws`), so the draws can be split across processes and
    gathered into the same list one process makes."""
    out = []
    for _ in distributed.seeded_draws(draws, warmup=draw):
        out.append(float(draw()))
        if progress is not None:
            progress.update(distributed.world_size())  # the draws of all processes, alike
    return distributed.gather_draws(out, draws)


def loss_draws(est, vae, x: torch.Tensor, draws: int, progress=None) -> list[float]:
    """``draws`` independent values of the estimate, in nats/example (:func:`value_draws`)."""
    return value_draws(lambda: est.loss(vae, x) / x.shape[0], draws, progress)


@dataclass
class MCStats:
    estimator: str
    mean: float
    se: float
    sd: float
    draws: int
    num_particles: int

    @classmethod
    def of(cls, name: str, values: list[float], num_particles: int) -> "MCStats":
        mean, se = mean_se(values)
        return cls(name, mean, se, se * math.sqrt(len(values)), len(values), num_particles)


def z_score(a: MCStats, b: MCStats) -> float:
    """Two-sample z = (m_a - m_b) / sqrt(se_a^2 + se_b^2)."""
    return (a.mean - b.mean) / math.sqrt(a.se**2 + b.se**2 + 1e-300)


@dataclass
class GradStats:
    """Per parameter tensor: the mean and variance over ``draws`` independent gradient estimates, and
    each draw's projections onto the tensor's fixed test directions (shape (draws, tensors, K))."""

    estimator: str
    names: list[str]
    mean: list[torch.Tensor]
    var: list[torch.Tensor]
    proj: torch.Tensor
    draws: int


def trainable(vae) -> tuple[list[str], list[torch.Tensor]]:
    """Names and tensors of the parameters that require gradients."""
    named = [(n, p) for n, p in vae.named_parameters() if p.requires_grad]
    return [n for n, _ in named], [p for _, p in named]


def grad_moments(
    label: str,
    loss_fn: Callable[[], torch.Tensor],
    names: list[str],
    params: list[torch.Tensor],
    draws: int,
    directions: list[torch.Tensor],
    progress=None,
) -> GradStats:
    """``draws`` gradients of ``loss_fn()``: float64 running sums for mean and variance (memory stays at
    two copies of the parameters however many draws) and their projections onto ``directions``. Draw r
    is seeded by its index; across processes each runs its share and the sums and the projections'
    rows are all-reduced (:mod:`vae_pyro.distributed`)."""
    s1 = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    s2 = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    proj = torch.zeros(draws, len(params), directions[0].shape[0] if directions else 1, dtype=torch.float64)
    for r in distributed.seeded_draws(draws, warmup=loss_fn):
        if params:
            grads = torch.autograd.grad(loss_fn(), params, allow_unused=True)
            for i, g in enumerate(grads):
                g = torch.zeros_like(params[i]) if g is None else g
                g = g.detach().double()
                s1[i] += g
                s2[i] += g * g
                proj[r, i] = (directions[i] @ g.flatten()).cpu()
        if progress is not None:
            progress.update(distributed.world_size())  # the draws of all processes, alike
    *s1, proj = distributed.sum_across(*s1, proj)  # projections: disjoint rows, so the sum is exact
    s2 = list(distributed.sum_across(*s2))
    mean = [a / draws for a in s1]
    var = [((b - draws * m * m) / (draws - 1)).clamp_min(0) for b, m in zip(s2, mean)]
    return GradStats(label, names, mean, var, proj, draws)


def gradient_draws(est, vae, x: torch.Tensor, draws: int, directions: list[torch.Tensor], progress=None) -> GradStats:
    """``draws`` independent gradients of -ELBO/example of estimator ``est`` (:func:`grad_moments`)."""
    names, params = trainable(vae)
    return grad_moments(
        est.name, lambda: est.differentiable_loss(vae, x) / x.shape[0], names, params, draws, directions, progress
    )


def unit_directions(
    pilot: list[torch.Tensor | None], params: list[torch.Tensor], num_random: int, seed: int
) -> list[torch.Tensor]:
    """Per parameter tensor, K = 1 + ``num_random`` unit directions: the ``pilot`` gradient's and
    ``num_random`` Gaussian ones from a generator seeded with ``seed``; one (K, numel) float64 tensor
    per parameter."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for p, g in zip(params, pilot):
        rand = torch.randn(num_random, p.numel(), generator=gen, dtype=torch.float64).to(p.device)
        first = (g if g is not None else torch.zeros_like(p)).detach().double().flatten()[None]
        dirs = torch.cat([first, rand])
        out.append(dirs / dirs.norm(dim=1, keepdim=True).clamp_min(1e-300))
    return out


def pilot_directions(
    loss_fn: Callable[[], torch.Tensor],
    params: list[torch.Tensor],
    seed: int,
    pilot_draws: int = 1,
    num_random: int = 3,
) -> list[torch.Tensor]:
    """Per parameter tensor, fixed unit directions to test gradients along (:func:`unit_directions`):
    the direction of a pilot gradient, the sum of ``pilot_draws`` gradients of ``loss_fn()`` drawn
    independently of the draws that are tested (so the direction does not favour them), and
    ``num_random`` seeded Gaussian directions. Every draw is seeded by ``seed``: the pilot's noise
    comes from a seed drawn from ``torch.Generator().manual_seed(seed)``, inside ``fork_rng``, so
    the directions depend on ``seed`` only (not on what ran before) and the caller's stream is untouched."""
    pilot_seed = int(torch.randint(2**62, (1,), generator=torch.Generator().manual_seed(seed)))
    cuda = sorted({p.device.index or 0 for p in params if p.device.type == "cuda"})
    total: list[torch.Tensor | None] = [None] * len(params)
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(pilot_seed)
        for _ in range(pilot_draws):
            grads = torch.autograd.grad(loss_fn(), params, allow_unused=True)
            total = [t if g is None else (g if t is None else t + g) for t, g in zip(total, grads)]
    return unit_directions(total, params, num_random, seed)


def gradient_directions(
    vae, x: torch.Tensor, num_random: int = 3, pilot_particles: int = 32, seed: int = 0, reference: str = "analytic"
) -> list[torch.Tensor]:
    """:func:`pilot_directions` for the VAE: the pilot is one gradient of the ``reference``
    estimator with ``pilot_particles`` samples per example."""
    _, params = trainable(vae)
    est = build_estimator(reference, pilot_particles)
    return pilot_directions(lambda: est.differentiable_loss(vae, x) / x.shape[0], params, seed, num_random=num_random)
