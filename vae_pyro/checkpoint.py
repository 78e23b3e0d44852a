"""Checkpoints: save and resume training safely.

* Written atomically (a temporary file beside the target, then ``os.replace``;
  :func:`vae_pyro.outputs.atomic_write`), so a crash, a NaN or a full disk never leaves a half-written
  file over the last good checkpoint, and a temporary left by a killed run is removed by the next save.
* Loaded with ``torch.load(..., weights_only=True)``: a checkpoint is data (tensors, numbers, strings,
  lists, dicts), never code, so loading one from elsewhere cannot run anything.
* Checked before use: a file that is not a vae-pyro checkpoint, or one saved for another model shape,
  gives one clear error instead of a cryptic ``load_state_dict`` traceback.
* Checked when loaded (:func:`model_problem`): every tensor of the model and of the optimiser's
  state is finite, and the model's tensors are the ones its saved config builds, shape for shape
  (the config's model is built on the meta device: no memory, no random numbers). A NaN bias or an
  all-inf checkpoint is one line naming the file and the tensor, never a ``nan`` result or a Pyro
  tensor dump; ``--resume`` refuses it before any work.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from . import distributed
from .model import VAE, VAEConfig
from .outputs import atomic_write
from .errors import CheckpointError, VaePyroError  # noqa: F401  (CheckpointError: re-exported)

FORMAT = "vae-pyro-checkpoint"
VERSION = 1


def save_checkpoint(
    path: str | os.PathLike,
    *,
    vae,
    optimizer=None,
    epoch: int,
    estimator: str,
    history: list[dict] | None = None,
    extra: dict | None = None,
) -> None:
    if not distributed.is_main():  # several processes: only process 0 writes
        return
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
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; give the checkpoint file")
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
    problem = structure_problem(payload) or model_problem(payload)
    if problem:
        raise CheckpointError(f"checkpoint {path} is damaged: {problem}")
    return payload


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_rng_state(v) -> bool:
    return isinstance(v, torch.Tensor) and v.dtype == torch.uint8 and v.dim() == 1


#: what each field of a checkpoint must be (the format tag and version are checked first)
FIELDS = {
    "model_config": lambda v: isinstance(v, dict) and all(check(v.get(k)) for k, check in CONFIG_FIELDS.items()),
    "model_state": lambda v: (
        isinstance(v, dict) and all(isinstance(k, str) and isinstance(t, torch.Tensor) for k, t in v.items())
    ),
    "optimizer_state": lambda v: (
        v is None
        or (isinstance(v, dict) and isinstance(v.get("state"), dict) and isinstance(v.get("param_groups"), list))
    ),
    "epoch": lambda v: _is_int(v) and v >= 0,
    "estimator": lambda v: isinstance(v, str),
    "history": lambda v: isinstance(v, list) and all(_history_entry_ok(h) for h in v),
    "torch_rng": _is_rng_state,
    "extra": lambda v: isinstance(v, dict) and ("generator" not in v or _is_rng_state(v["generator"])),
}
CONFIG_FIELDS = {
    "x_dim": lambda v: _is_int(v) and v >= 1,
    "hidden": lambda v: isinstance(v, (list, tuple)) and all(_is_int(h) and h >= 1 for h in v),
    "z_dim": lambda v: _is_int(v) and v >= 1,
    "prior": lambda v: isinstance(v, str),
    "likelihood": lambda v: isinstance(v, str),
    "prior_options": lambda v: isinstance(v, dict),
    "likelihood_options": lambda v: isinstance(v, dict),
    "kl_weight": _is_number,
}
HISTORY_FIELDS = {
    "epoch": _is_int,
    "train_neg_elbo": _is_number,
    "seconds": _is_number,
    "test_neg_elbo": lambda v: v is None or _is_number(v),
    "kl_weight": _is_number,
}


def _history_entry_ok(h) -> bool:
    return (
        isinstance(h, dict)
        and set(h) == set(HISTORY_FIELDS)
        and all(check(h[k]) for k, check in HISTORY_FIELDS.items())
    )


def structure_problem(payload: dict) -> str | None:
    """The first field of ``payload`` that is missing or of the wrong kind, as words; None if whole."""
    for key, ok in FIELDS.items():
        if key not in payload:
            return f"field {key!r} is missing"
        if not ok(payload[key]):
            if key == "model_config" and isinstance(payload[key], dict):
                bad = next(k for k, check in CONFIG_FIELDS.items() if not check(payload[key].get(k)))
                return f"model_config.{bad} is {payload[key].get(bad)!r}"
            return f"field {key!r} is not a valid {key.replace('_', ' ')}"
    return None


def _nonfinite(name: str, tensor: torch.Tensor) -> str | None:
    if not tensor.is_floating_point() or bool(torch.isfinite(tensor).all()):
        return None
    bad = tensor[~torch.isfinite(tensor)]
    kinds = " and ".join(k for k, hit in (("nan", bool(bad.isnan().any())), ("inf", bool(bad.isinf().any()))) if hit)
    return (
        f"tensor {name!r} has {bad.numel()} non-finite value(s) ({kinds}) of {tensor.numel()}; "
        "these weights cannot be evaluated or trained on: use an earlier checkpoint or train again"
    )


def expected_shapes(model_config: dict) -> dict[str, tuple[int, ...]]:
    """The tensors (name -> shape) of the model ``model_config`` describes, built on the meta device
    (no memory) where its parts allow; a part whose construction reads a value (Pyro's autoregressive
    networks build their masks from numbers: the ``iaf`` guide) is built on the CPU instead."""
    config = VAEConfig.from_dict(model_config)
    try:
        with torch.device("meta"):
            vae = VAE(config)
    except RuntimeError:
        with torch.random.fork_rng(devices=[]):  # its random initial weights must not move the run's stream
            vae = VAE(config)
    return {name: tuple(t.shape) for name, t in vae.state_dict().items()}


def model_problem(payload: dict) -> str | None:
    """The first tensor of a structurally whole ``payload`` that is not what its config builds (missing,
    unexpected, another shape) or not finite (its optimiser's state included), as words; None if sound."""
    try:
        expected = expected_shapes(payload["model_config"])
    except (VaePyroError, ValueError, KeyError, TypeError) as err:
        return f"its model_config does not describe a model ({err})"
    state = payload["model_state"]
    for name, shape in expected.items():
        if name not in state:
            return f"tensor {name!r} is missing"
        if tuple(state[name].shape) != shape:
            return f"tensor {name!r} has shape {tuple(state[name].shape)}; its model_config builds {shape}"
    extra = sorted(set(state) - set(expected))
    if extra:
        return f"unexpected tensor {extra[0]!r}"
    for name, tensor in state.items():
        problem = _nonfinite(name, tensor)
        if problem:
            return problem
    optimizer = payload["optimizer_state"] or {"state": {}}
    for index, entry in optimizer["state"].items():
        for key, value in entry.items() if isinstance(entry, dict) else ():
            problem = (
                _nonfinite(f"optimizer_state.state.{index}.{key}", value) if isinstance(value, torch.Tensor) else None
            )
            if problem:
                return problem
    return None


def restore(payload: dict, vae, optimizer=None, path: str | os.PathLike = "checkpoint") -> None:
    """Load weights (and optimizer state) into ``vae``, refusing a checkpoint of another shape."""
    # a field the checkpoint predates (e.g. ``activation``) had its default value when it was saved
    saved = {**VAEConfig().to_dict(), **payload["model_config"]}
    current = vae.config.to_dict()
    differing = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if differing:
        parts = ", ".join(f"{k}: checkpoint {a!r} vs this run {b!r}" for k, (a, b) in differing.items())
        raise CheckpointError(f"checkpoint {path} was saved for another model ({parts})")
    state, expected = payload["model_state"], vae.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            raise CheckpointError(f"checkpoint {path} is damaged: tensor {name!r} is missing")
        if state[name].shape != tensor.shape:
            raise CheckpointError(
                f"checkpoint {path} is damaged: tensor {name!r} has shape "
                f"{tuple(state[name].shape)}, the model needs {tuple(tensor.shape)}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise CheckpointError(f"checkpoint {path} is damaged: unexpected tensor {extra[0]!r}")
    vae.load_state_dict({k: v.to(vae.device) for k, v in state.items()})
    if optimizer is not None and payload.get("optimizer_state") is not None:
        try:
            optimizer.load_state_dict(payload["optimizer_state"])
            fits = all(
                v.shape == p.shape
                for p, st in optimizer.state.items()
                for v in st.values()
                if isinstance(v, torch.Tensor) and v.dim() > 0
            )  # Adam's moments: one per weight
        except (ValueError, KeyError, TypeError, RuntimeError, AttributeError):
            fits = False
        if not fits:
            raise CheckpointError(f"checkpoint {path} is damaged: its optimizer state does not fit this model")
