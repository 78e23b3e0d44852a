"""Which whole-step route a training run takes, and why: the one rule behind ``--step auto``.

Measured (``scripts/benchmark.py``, docs/benchmark.md), at batch 128 with the default VAE:

* **CUDA**: the whole step captured in one CUDA graph (:mod:`vae_pyro.captured_step`) takes 0.31 /
  0.38 / 0.37 ms (analytic / trace / tmf) on an H100 against milliseconds eager, and capturing costs
  well under a second: ``auto`` captures.
* **CPU** (one thread, docs/benchmark.md): the step fused by inductor (:mod:`vae_pyro.fused_step`)
  takes 7.7 / 8.3 / 8.1 ms against 10.3 / 11.5 / 13.0 ms eager, so it saves about 3 ms per step, and
  tracing and compiling it costs ~20 s with an empty inductor cache (3-6 s once the cache holds its
  kernels). 20 s / 3 ms is ~7,000 steps: ``auto`` fuses from :data:`FUSE_MIN_STEPS` full-size steps on,
  and runs eagerly below.

Both routes need a captured loss (``analytic``, ``trace``, ``tmf`` and their ``*_graph`` twins) and one
process (neither reduces gradients across processes); otherwise the run is eager, and says why.
"""

from __future__ import annotations

import torch

from . import distributed
from .captured_step import captured_loss_fn
from .devices import STEPS
from .errors import SpecError, VaePyroError
from .estimators import Estimator

#: full-size training steps from which ``auto`` fuses on the CPU (see the module docstring)
FUSE_MIN_STEPS = 7_000


def choose_step(step: str, device: torch.device, estimator: Estimator, full_steps: int) -> tuple[str, str]:
    """``(route, why)`` for ``step`` (one of :data:`~vae_pyro.devices.STEPS`) on ``device``, training
    with ``estimator`` for ``full_steps`` full-size batches. An explicit ``captured`` or ``fused`` that
    cannot apply is an error; ``auto`` falls back to ``eager`` with the reason."""
    if step not in STEPS:
        raise SpecError(f"training.step: unknown step {step!r}; allowed: {', '.join(STEPS)}")
    if step == "eager":
        return "eager", "asked for"
    try:
        captured_loss_fn(estimator)
    except VaePyroError as err:
        if step != "auto":
            raise
        return "eager", f"no whole-step route for this estimator ({err})"
    if distributed.world_size() > 1:
        if step != "auto":
            raise SpecError(f"training.step {step!r} runs in one process; allowed with several: eager, auto")
        return "eager", "several processes: a whole step reduces no gradients across them"
    if step != "auto":
        return step, "asked for"
    if device.type == "cuda":
        return "captured", "CUDA: the whole step as one CUDA graph"
    if full_steps >= FUSE_MIN_STEPS:
        return "fused", f"{full_steps:,} steps amortise the fused step's compile (from {FUSE_MIN_STEPS:,})"
    return "eager", f"{full_steps:,} steps are too few to amortise the fused step's compile (from {FUSE_MIN_STEPS:,})"
