"""Checkpoints: save and resume training safely.

* Written atomically (a temporary file beside the target, then ``os.replace``;
  :func:`vae_pyro.outputs.atomic_write`), so a crash, a NaN or a full disk never leaves a half-written
  file over the last good checkpoint, and a temporary left by a killed run is removed by the next save.
* Loaded with ``torch.load(..., weights_only=True)``: a checkpoint is data (tensors, numbers, strings,
  lists, dicts), never code, so loading one from elsewhere cannot run anything.
* Checked before use: a file that is not a vae-pyro checkpoint, or one saved for another model shape,
  gives one clear error instead of a cryptic ``load_state_dict`` traceback.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from .outputs import atomic_write

FORMAT = "vae-pyro-checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and what is wrong."""


def save_checkpoint(path: str | os.PathLike, *, vae, optimizer=None, epoch: int, estimator: str,
                    history: list[dict] | None = None, extra: dict | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": vae.config.to_dict(),
        "model_state": {k: v.detach().cpu() for k, v in vae.state_dict().items()},
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "epoch": int(epoch),
        "estimator": estimator,
        "history": history or [],
        "torch_rng": torch.get_rng_state(),
        "extra": extra or {},
    }
    atomic_write(path, lambda fh: torch.save(payload, fh))


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint's contents (tensors on the CPU), validated; raises :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        # torch's own message is long and suggests weights_only=False, which we never do.
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a vae-pyro checkpoint ({type(err).__name__})"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a vae-pyro checkpoint")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has version {payload.get('version')}; this vae-pyro reads {VERSION}")
    return payload


def restore(payload: dict, vae, optimizer=None, path: str | os.PathLike = "checkpoint") -> None:
    """Load weights (and optimizer state) into ``vae``, refusing a checkpoint of another shape."""
    saved, current = payload["model_config"], vae.config.to_dict()
    differing = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if differing:
        parts = ", ".join(f"{k}: checkpoint {a!r} vs this run {b!r}" for k, (a, b) in differing.items())
        raise CheckpointError(f"checkpoint {path} was saved for another model ({parts})")
    vae.load_state_dict({k: v.to(vae.device) for k, v in payload["model_state"].items()})
    if optimizer is not None and payload.get("optimizer_state") is not None:
        optimizer.load_state_dict(payload["optimizer_state"])
