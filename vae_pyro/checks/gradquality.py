r"""Gradient quality: variance and signal-to-noise ratio of each estimator's gradient.

Rainforth et al. (2018, "Tighter variational bounds are not necessarily better") judge a gradient
estimator Delta of a parameter by its signal-to-noise ratio

    SNR = |E[Delta]| / sd[Delta],

per parameter element, averaged over the elements of a group. They show that for IWAE_k the
decoder's (theta) SNR grows like sqrt(k) while the encoder's (phi) SNR *falls* like 1/sqrt(k). We
measure it for every estimator at the same parameters from ``draws`` independent gradients of
-bound/example on the same batch, separately for the encoder and the decoder, along with the total
variance sum_j Var[Delta_j] (the trace of the gradient's covariance).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from .stats import gradient_draws


@dataclass
class GradQuality:
    estimator: str
    num_particles: int
    draws: int
    encoder_snr: float
    decoder_snr: float
    encoder_var: float  # sum of per-element variances, (nats/example)^2 per parameter^2
    decoder_var: float
    encoder_grad_norm: float  # |mean gradient|
    decoder_grad_norm: float

    def to_dict(self) -> dict:
        return asdict(self)


def _group(names: list[str], name: str) -> str:
    return name.split(".", 1)[0]


def _mean_snr(mean: list[torch.Tensor], var: list[torch.Tensor]) -> float:
    """Mean over elements of |mean| / sd. Elements that no draw moved (mean and sd both 0: e.g. a
    bias that does not affect the bound) carry no signal and are left out."""
    m = torch.cat([t.flatten() for t in mean]).abs()
    sd = torch.cat([t.flatten() for t in var]).sqrt()
    live = (m > 0) | (sd > 0)
    if not bool(live.any()):
        return float("nan")
    snr = torch.where(sd[live] > 0, m[live] / sd[live].clamp_min(1e-300), torch.full_like(m[live], math.inf))
    return float(snr.mean())


def gradient_quality(
    est, vae, x: torch.Tensor, draws: int = 50, progress=None, label: str | None = None
) -> GradQuality:
    """SNR and variance of ``est``'s gradient for the encoder's and the decoder's parameters."""
    names = [n for n, p in vae.named_parameters() if p.requires_grad]
    params = [p for p in vae.parameters() if p.requires_grad]
    directions = [torch.zeros(1, p.numel(), dtype=torch.float64, device=p.device) for p in params]
    stats = gradient_draws(est, vae, x, draws, directions, progress)
    out = {}
    for group in ("encoder", "decoder"):
        idx = [i for i, n in enumerate(names) if _group(names, n) == group]
        mean = [stats.mean[i] for i in idx]
        var = [stats.var[i] for i in idx]
        out[group] = (
            _mean_snr(mean, var),
            float(sum(v.sum() for v in var)),
            float(torch.cat([m.flatten() for m in mean]).norm()),
        )
    return GradQuality(
        label or est.name,
        est.num_particles,
        draws,
        out["encoder"][0],
        out["decoder"][0],
        out["encoder"][1],
        out["decoder"][1],
        out["encoder"][2],
        out["decoder"][2],
    )
