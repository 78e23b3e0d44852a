"""A non-finite training step neutralised on the device, never read (shared by :mod:`vae_pyro.train`'s
eager step and :mod:`vae_pyro.captured_step`'s recorded one, so neither imports the other)."""

from __future__ import annotations

import torch


def neutralise_nonfinite(vae, optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """Before ``optimizer.step()``: a non-finite step is neutralised on the device, not read."""
    bad = ~torch.isfinite(loss.detach())
    if optimizer.defaults.get("fused"):
        optimizer.found_inf = bad.float()  # fused Adam skips the whole update (GradScaler's protocol)
    else:
        for p in vae.parameters():  # elsewhere its gradient is zeroed (Adam's momentum still moves)
            if p.grad is not None:
                p.grad.masked_fill_(bad, 0.0)
