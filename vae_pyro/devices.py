"""Where tensors live: the device names a spec may ask for, and the device they resolve to. Low in
the layers (torch only), so that parsing a spec imports no training code."""

from __future__ import annotations

import torch

from .errors import DeviceError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU. Asking for ``cuda`` without it is an error, not a
    silent fallback, so a benchmark never reports CPU numbers as GPU numbers."""
    if name not in DEVICES:
        raise DeviceError(f"training.device: unknown device {name!r}; allowed: {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError("training.device 'cuda' requested but CUDA is not available; allowed here: auto, cpu")
    return torch.device(name)


#: how each full-size training batch runs (:mod:`vae_pyro.steps`): ``eager`` (Python every step),
#: ``captured`` (the whole step as one CUDA graph on CUDA; eager elsewhere), ``fused`` (traced out of
#: Pyro and compiled by inductor), ``auto`` (the fastest of them that applies to the run)
STEPS = ("auto", "eager", "captured", "fused")
