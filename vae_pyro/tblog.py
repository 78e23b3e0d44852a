"""TensorBoard scalars of a command's result (``--log-dir DIR``), through ``torch.utils.tensorboard``.

Every number a command returns becomes a scalar, tagged by where it sits in the result (the same
dict as its ``--json``): ``COMMAND/KEY/.../FIELD``, a list entry by its ``name`` (``compare/estimators/
trace/neg_elbo_mean``, ``compare/estimators/trace/grad_agreement``, ``check/checks/trace/
elbo_matches_exact/value``). A per-epoch series (a list of records with an ``epoch``: training's
``history``, reproduce's validation/test ``curve``) is one scalar per epoch at step = epoch
(``train/history/train_neg_elbo``, ``reproduce/rows/iwae-k5/curve/val_bound``); everything else is
at step 0. The run's configuration (``settings``, ``spec``, ``model`` ...) is in the JSON, not here.

TensorBoard is an optional extra (``pip install 'vae-pyro[tensorboard]'``): :func:`require` refuses
``--log-dir`` without it in one line, before any work. Only process 0 writes (under torchrun).
"""

from __future__ import annotations

import math

from . import distributed
from .errors import VaePyroError

#: result keys that describe the run rather than measure it (they stay in the JSON only)
CONFIGURATION = frozenset({"schema_version", "seed", "processes", "settings", "spec", "model", "config"})


class LogDirError(VaePyroError):
    """``--log-dir`` cannot be written: TensorBoard is not installed."""


def require(log_dir) -> None:
    """Nothing when ``log_dir`` is None or TensorBoard imports; else one :class:`LogDirError`."""
    if log_dir is None:
        return
    try:
        import tensorboard  # noqa: F401  (an optional dependency, imported only when asked for)
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise LogDirError(
            "--log-dir (log_dir) needs TensorBoard, which is not installed: pip install "
            "'vae-pyro[tensorboard]' (or pip install tensorboard), or drop --log-dir"
        ) from None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _label(item: dict, prefix: str) -> str:
    """A list entry's tag: its estimator and name, where the tag does not hold them already."""
    parts = prefix.split("/")
    return "/".join(str(item[k]) for k in ("estimator", "name") if k in item and str(item[k]) not in parts)


def scalars(result, prefix: str) -> list[tuple[str, float, int]]:
    """``(tag, value, step)`` for every number of ``result`` (see the module docstring)."""
    out: list[tuple[str, float, int]] = []
    if isinstance(result, dict):
        for key, value in result.items():
            if key not in CONFIGURATION:
                out += scalars(value, f"{prefix}/{key}")
    elif isinstance(result, list) and result and all(isinstance(r, dict) and "epoch" in r for r in result):
        for record in result:
            out += [
                (f"{prefix}/{k}", float(v), int(record["epoch"]))
                for k, v in record.items()
                if k != "epoch" and _number(v) and math.isfinite(v)
            ]
    elif isinstance(result, list):
        for i, item in enumerate(result):
            label = _label(item, prefix) if isinstance(item, dict) else ""
            out += scalars(item, f"{prefix}/{label or i}")
    elif _number(result) and math.isfinite(result):
        out.append((prefix, float(result), 0))
    return out


def write(log_dir, result: dict, command: str) -> None:
    """Write ``result``'s scalars as TensorBoard events under ``log_dir``, tagged ``command/...``
    (process 0 only)."""
    if log_dir is None or not distributed.is_main():
        return
    from torch.utils.tensorboard import SummaryWriter  # optional: require() has checked it imports

    writer = SummaryWriter(log_dir=str(log_dir))
    try:
        for tag, value, step in scalars(result, command):
            writer.add_scalar(tag, value, step)
    finally:
        writer.close()
