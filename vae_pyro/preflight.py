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
from .errors import SpecError


def _same_or_inside(given: dict) -> None:
    """Two outputs of one run that resolve to one path (``--checkpoint X --json X``, a link to the
    other), or a file inside the run folder that the run replaces whole: one error, before any work."""
    where = {option: outputs.resolved(path) for option, path in given.items()}
    options = list(where)
    for i, a in enumerate(options):
        for b in options[i + 1 :]:
            pa, pb = where[a], where[b]
            if pa == pb:
                raise outputs.OutputError(
                    f"{a} {given[a]} and {b} {given[b]} are the same file; one would replace the other: give two paths"
                )
            for folder, inner in ((a, b), (b, a)):
                if folder == "--out" and where[folder] in where[inner].parents:
                    raise outputs.OutputError(
                        f"{inner} {given[inner]} is inside --out {given[folder]}, which the "
                        "run replaces whole; give a path outside it"
                    )


def check_outputs(
    *,
    json: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    out: str | os.PathLike | None = None,
    force: bool = False,
    epochs: int | None = None,
) -> None:
    """Check every output a run will write, before any work (see the module docstring): the result
    JSON, a training checkpoint (with ``resume``: an existing, usable checkpoint; without: a new file)
    and an experiment's run folder; each is claimed for this run (:func:`vae_pyro.outputs.claim`),
    and no two of them may be one path. ``epochs``: a resume's total, which must exceed the
    checkpoint's epoch (else it would train nothing). Called by every library entry point (:mod:`vae_pyro.api`)."""
    if resume and checkpoint is None:
        raise outputs.OutputError("resume=True needs checkpoint=PATH, the checkpoint to continue from")
    given = {
        option: path
        for option, path in (("--json", json), ("--checkpoint", checkpoint), ("--out", out))
        if path is not None
    }
    for option, path in given.items():
        outputs.check_path_text(path, option, folder=option == "--out")
    _same_or_inside(given)
    if json is not None:
        outputs.check_output_file(json, "--json", force=force)
    if checkpoint is not None:
        if resume and force:
            raise outputs.OutputError(
                "resume=True continues the checkpoint and force=True starts over in its place; give one of them"
            )
        if resume:
            outputs.writable_folder(Path(checkpoint).parent, "--checkpoint", Path(checkpoint))
            outputs.claim(checkpoint, "--checkpoint")  # before reading it: a concurrent resume is refused
            outputs.check_replaceable(outputs.resolved(checkpoint), "--checkpoint", checkpoint)
            saved = load_checkpoint(checkpoint)["epoch"]
            if epochs is not None and epochs <= saved:
                raise SpecError(
                    f"training.epochs {epochs}: checkpoint {checkpoint} is at epoch {saved} already, so "
                    f"--resume would train nothing; give training.epochs above {saved} (the total, "
                    "the checkpoint's epochs included)"
                )
        else:
            outputs.check_output_file(checkpoint, "--checkpoint", force=force, resumable=True)
    if out is not None:
        outputs.check_run_folder(out, "--out", force=force)
