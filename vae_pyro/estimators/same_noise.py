r"""Shared noise: the one way two computations of a bound are run on the very same random draws.

A Pyro estimator draws z from the guide itself. To evaluate a hand-written loss at that z, run the
estimator with its guide traced, read the z it drew and recover the standard-normal noise of the
reparameterisation z = mu + sigma * eps (Kingma & Welling 2013, section 2.4),

    eps = (z - mu(x)) / sigma(x),   sigma = exp(logvar / 2),

then feed that eps to the other computation. Other guide families invert their own sampling
(:meth:`vae_pyro.guides.Posterior.noise`: a triangular solve, a flow's cached inputs, or the noise
the low-rank distribution recorded). In float64 two computations of the same quantity then
differ by float rounding only (~1e-13 nats), so a real modelling difference stands out by orders of
magnitude (see :mod:`vae_pyro.checks.agreement` for the tolerances). Used by the same-noise check of
every Pyro ELBO against the analytic loss and by IWAE's check against ``RenyiELBO(alpha=0)``.
"""

from __future__ import annotations

import torch
from pyro import poutine


def recorded_noise(vae, x: torch.Tensor, elbo, num_particles: int, *args) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, eps)``: the Pyro ELBO's ``differentiable_loss`` on (``vae.model``, ``vae.guide``) with
    model arguments ``(x, *args)``, and the noise its guide drew, shape (num_particles, batch, z_dim),
    detached (the other computation differentiates through mu and sigma, not through the noise)."""
    traced_guide = poutine.trace(vae.guide)
    loss = elbo.differentiable_loss(vae.model, traced_guide, x, *args)
    site = traced_guide.msngr.trace.nodes["z"]
    # the value itself, not a detached copy: a flow recovers its noise from each transform's cache,
    # which is keyed on the very tensor it returned
    eps = vae.posterior(x).noise(site["value"], site["fn"])
    return loss, eps.detach().reshape(num_particles, x.shape[0], -1)


def max_rel_grad_diff(ga, gb) -> float:
    """The largest |a - b| / max|b| over paired gradient tensors (a ``None``, an unused parameter, is skipped)."""
    worst = 0.0
    for a, b in zip(ga, gb):
        if a is None or b is None:
            continue
        worst = max(worst, float((a - b).abs().max() / (b.abs().max() + 1e-30)))
    return worst


def differences(a: torch.Tensor, b: torch.Tensor, params, batch: int) -> tuple[float, float]:
    """``(|a - b| / batch, relative gradient difference)`` of two losses summed over ``batch`` examples:
    the value gap in nats per example and :func:`max_rel_grad_diff` of their gradients in ``params``."""
    ga = torch.autograd.grad(a, params, allow_unused=True)
    gb = torch.autograd.grad(b, params, allow_unused=True)
    return abs((a - b).item()) / batch, max_rel_grad_diff(ga, gb)
