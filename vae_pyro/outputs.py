"""Where results go, and what vae-pyro promises about them.

* **Checked before any work.** :func:`vae_pyro.preflight.check_outputs` looks at every output a run
  was given (``--json``, ``--checkpoint``, ``--out``) before data is loaded or a model is trained: a
  path that is a folder where a file is wanted (or the reverse), a parent that is a file, a folder
  that cannot be written is one :class:`OutputError` line naming the option and the path. The
  folders are created (and written to once, as a probe) here, so a run cannot fail at its end for
  want of a folder.
* **Never over a user's results.** An existing result file, checkpoint or run folder is refused
  unless ``--force`` (or, for a checkpoint, ``--resume``) says what to do with it.
* **Written once, atomically.** A file is written to a temporary sibling (``.NAME.tmp-PID-XXXX``) and
  renamed over its target (:func:`atomic_write`); a run folder is built in a sibling folder and
  renamed into place when complete (:func:`staged_folder`), so the target is always either the old
  complete run or the new complete run, never a mix of two.
* **The user's file mode.** Files are created with ``open()``, i.e. mode 0666 minus the umask (0644
  under the usual umask 022), like any other program's output (``mkstemp`` would give 0600).
* **No litter.** Temporaries left by a killed process (its PID is no longer running) are removed by
  the next write of the same target.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from . import distributed
from .errors import OutputError  # noqa: F401  (re-exported)


# ----------------------------------------------------------------------------------------------
# Temporary siblings


_TEMP = re.compile(r"\.(tmp|old)-(\d+)-[0-9a-f]+$")
#: ``tempfile.mkstemp``'s suffix: what earlier versions of vae-pyro left after a SIGKILL
_LEGACY_TEMP = re.compile(r"^[a-z0-9_]{8}$")


def _sibling(path: Path, kind: str) -> Path:
    return path.parent / f".{path.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _legacy_checkpoint_temporary(entry: Path, tail: str) -> bool:
    """A ``mkstemp`` temporary of an interrupted ``torch.save`` (empty, or a zip archive's start): the
    name alone could be a user's own hidden file, so the content must agree."""
    if not _LEGACY_TEMP.match(tail) or not entry.is_file() or entry.is_symlink():
        return False
    with open(entry, "rb") as fh:
        head = fh.read(4)
    return head in (b"", b"PK\x03\x04")


def clean_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of ``path`` that a killed process left behind (those whose PID is not
    running, and the old ``mkstemp`` ones); a live writer's are kept. A stale ``.old-`` run folder
    whose target is missing (killed between the two renames of :func:`replace_folder`) is renamed
    back, so an interrupted ``--force`` never loses the previous run. Returns what was removed."""
    if not distributed.is_main():  # several processes: process 0 alone owns the output paths
        return []
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    prefix = f".{path.name}."
    for entry in path.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        tail = entry.name[len(prefix):]
        match = _TEMP.match("." + tail)
        stale = (match and not _alive(int(match.group(2)))) or _legacy_checkpoint_temporary(entry, tail)
        if not stale:
            continue
        if match and match.group(1) == "old" and not path.exists():
            os.rename(entry, path)
            continue
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[object], None]) -> None:
    """Call ``write(binary file)`` on a temporary sibling of ``path``, then rename it over ``path``:
    a crash, a full disk or a SIGKILL leaves ``path`` as it was. The file gets the user's mode."""
    if not distributed.is_main():  # several processes: only process 0 writes
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    tmp = _sibling(path, "tmp")
    try:
        with open(tmp, "xb") as fh:  # open(): mode 0666 & ~umask
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


# ----------------------------------------------------------------------------------------------
# Run folders


def replace_folder(stage: Path, target: Path) -> None:
    """Put the complete folder ``stage`` at ``target``. A non-empty ``target`` is first renamed aside
    and removed only after the new one is in place; a crash in between leaves it as ``.NAME.old-*``,
    which :func:`clean_stale_temporaries` renames back."""
    if target.is_dir() and any(target.iterdir()):
        old = _sibling(target, "old")
        os.rename(target, old)
        os.rename(stage, target)
        shutil.rmtree(old)
    else:
        if target.is_dir():
            target.rmdir()
        os.rename(stage, target)


@contextmanager
def staged_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh sibling folder to write a run into; on success it replaces ``path`` whole
    (:func:`replace_folder`), on any error it is removed and ``path`` is untouched."""
    if not distributed.is_main():  # several processes: the others write into a folder that is thrown away
        stage = Path(tempfile.mkdtemp(prefix="vae-pyro-"))
        try:
            yield stage
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(target)
    stage = _sibling(target, "tmp")
    stage.mkdir()
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    replace_folder(stage, target)


# ----------------------------------------------------------------------------------------------
# Validation, before any work


def writable_folder(folder: Path, option: str, path: Path) -> None:
    """Create ``folder`` (and its parents) and prove a file can be created in it."""
    for ancestor in (folder, *folder.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OutputError(f"{option} {path}: {ancestor} is a file, not a folder; choose another path")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OutputError(f"{option} {path}: cannot write in folder {folder} ({err.strerror or err}); "
                          "choose another path") from None


def check_output_file(path: str | os.PathLike, option: str, *, force: bool = False,
                      resumable: bool = False) -> Path:
    """``path`` can be written as a result file: not a folder, its folder writable, and not an
    existing file unless ``force``."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; give a file path")
    writable_folder(path.parent, option, path)
    if path.exists() and not force:
        resume = ", --resume to continue from it," if resumable else ""
        raise OutputError(f"{option} {path} already exists; pass --force to replace it{resume} "
                          "or choose a new path")
    return path


#: what a run folder holds (vae_pyro.experiment); --force replaces only a folder of these, so a
#: mistyped ``--out ~ --force`` cannot delete a folder of other files
#: what a run folder of `experiment` or `reproduce` holds (the only entries --force may delete)
RUN_FOLDER_ENTRIES = ("metrics.json", "metrics.csv", "results.json", "report.md", "checkpoints", "*.png")


def _foreign_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not any(p.match(pattern) for pattern in RUN_FOLDER_ENTRIES))


def check_run_folder(path: str | os.PathLike, option: str = "--out", *, force: bool = False) -> Path:
    """``path`` can take a new run: not a file, its parent writable (the run is built beside it), and
    not a folder holding files unless ``force``, which replaces only an earlier run's folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path} is a file; give a folder path")
    writable_folder(path.parent, option, path)
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise OutputError(f"{option} {path} already holds files (an earlier run?); pass --force to replace "
                              "the whole folder, or choose a new folder")
        foreign = _foreign_entries(path)
        if foreign:
            raise OutputError(f"{option} {path} holds files that are not a vae-pyro run (e.g. {foreign[0]!r}), "
                              "which --force would delete; move them away or choose a new folder")
    return path
