"""Every output a run was given, checked before any work (the promises are :mod:`vae_pyro.outputs`'s).

Above both :mod:`vae_pyro.outputs` (paths, folders, atomic writes) and :mod:`vae_pyro.checkpoint`
(which writes through ``outputs``): a ``--resume`` is checked by loading its checkpoint, so this check
cannot live in ``outputs`` without an import cycle.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import outputs
from .checkpoint import load_checkpoint


def check_outputs(*, json: str | os.PathLike | None = None, checkpoint: str | os.PathLike | None = None,
                  resume: bool = False, out: str | os.PathLike | None = None, force: bool = False) -> None:
    """Check every output a run will write, before any work (see the module docstring): the result
    JSON, a training checkpoint (with ``resume``: an existing, usable checkpoint; without: a new file)
    and an experiment's run folder. Called by every library entry point (:mod:`vae_pyro.api`)."""
    if json is not None:
        outputs.check_output_file(json, "--json", force=force)
    if resume and not checkpoint:
        raise outputs.OutputError("--resume needs --checkpoint PATH")
    if checkpoint:
        if resume and force:
            raise outputs.OutputError("--resume continues the checkpoint and --force starts over in its place; "
                                      "give one of them")
        if resume:
            outputs.writable_folder(Path(checkpoint).parent, "--checkpoint", Path(checkpoint))
            load_checkpoint(checkpoint)
        else:
            outputs.check_output_file(checkpoint, "--checkpoint", force=force, resumable=True)
    if out is not None:
        outputs.check_run_folder(out, "--out", force=force)
