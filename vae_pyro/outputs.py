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
* **One writer per output.** Every output a run will write is *claimed* (:func:`claim`): an advisory
  ``fcntl.flock`` on a sibling lock file ``.NAME.lock`` holding the writer's PID, taken before the
  existence check and held until the run ends (:func:`release_claims`, after the final rename). A
  second run on the same output is refused at once, naming the holder; the lock file is removed by
  its holder, and a killed holder's lock is released by the kernel.
* **Paths as the OS will see them.** Before any work: an empty path, a trailing slash or ``.`` where
  a file is wanted, a name too long once our temporary suffix is added (``NAME_MAX``, ``PATH_MAX``),
  anything but a regular file in a file's place (a device node, a FIFO), the current folder as a run
  folder, a run folder (or a subfolder) that cannot be written to. Symbolic links are followed, like
  ``open()`` would: the file or folder they point to is the one replaced.
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import os
import re
import secrets
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from . import distributed
from .errors import OutputError  # noqa: F401  (re-exported)


# ----------------------------------------------------------------------------------------------
# Temporary siblings


#: every file and run folder this process has put in place (renamed over its target), in order
WRITTEN: list[Path] = []

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
        tail = entry.name[len(prefix) :]
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
    path = resolved(path)  # through a symbolic link, like open(): the file it points to is replaced
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(path)
    tmp = _sibling(path, "tmp")
    try:
        with open(tmp, "xb") as fh:  # open(): mode 0666 & ~umask
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        WRITTEN.append(path)
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
    target = resolved(path)
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
    WRITTEN.append(target)


# ----------------------------------------------------------------------------------------------
# One writer per output


#: output (resolved) -> (file descriptor holding its lock, the lock file)
_CLAIMS: dict[Path, tuple[int, Path]] = {}


def resolved(path: str | os.PathLike) -> Path:
    """``path`` as the OS will write it: absolute, symbolic links followed (a missing tail is kept)."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def lock_file(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


def _holder(fd: int) -> str:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return f"pid {text}" if text.isdigit() else "a process that is starting"


def claim(path: str | os.PathLike, option: str) -> Path | None:
    """Hold the lock of output ``path`` (:func:`resolved`) for this process until
    :func:`release_claims`: ``fcntl.flock`` on ``.NAME.lock`` beside it, not waiting; held by another
    process, one :class:`OutputError` line naming it. Claiming an output this process holds is a
    no-op. The lock file is created in ``path``'s folder, which must exist. Returns the target."""
    if not distributed.is_main():  # several processes: process 0 alone owns the output paths
        return None
    target = resolved(path)
    if target in _CLAIMS:
        return target
    lock = lock_file(target)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise OutputError(
                f"{option} {path} is being written by another vae-pyro run ({holder}); wait for it "
                "to end or choose another path"
            ) from None
        try:  # its last holder may have removed the file between our open and our lock: lock the new one
            current = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _CLAIMS[target] = (fd, lock)
    return target


def release_claims(keep: frozenset = frozenset()) -> None:
    """Release this process's claims (but those in ``keep``): each lock file is removed while still
    locked, so a run waiting on it sees the file change and locks the new one (:func:`claim`)."""
    for target in [t for t in _CLAIMS if t not in keep]:
        fd, lock = _CLAIMS.pop(target)
        try:
            os.unlink(lock)
        except FileNotFoundError:
            pass
        os.close(fd)


atexit.register(release_claims)


def releasing_claims(fn):
    """Decorate a library entry point: the outputs it claims are released when it returns or raises
    (the claims its caller held before are kept)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        held = frozenset(_CLAIMS)
        try:
            return fn(*args, **kwargs)
        finally:
            release_claims(keep=held)

    return wrapper


# ----------------------------------------------------------------------------------------------
# Validation, before any work


#: the longest suffix a temporary sibling adds to a name: ``.NAME.tmp-PID-XXXXXXXX`` (a PID has at
#: most 7 digits: Linux's pid_max is at most 2**22)
TEMP_EXTRA = len(".") + len(".tmp-") + 7 + len("-") + 8
#: room for what a run folder holds below its own path (checkpoints/NAME.pt and its temporary)
FOLDER_INSIDE = 100


def _limit(folder: str, name: str, default: int) -> int:
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        return os.pathconf(folder or "/", name)
    except (OSError, ValueError):
        return default


def check_path_text(path: str | os.PathLike, option: str, *, folder: bool = False) -> None:
    """``path`` as text, before any system call sees it: not empty; for a file, not ending in a slash
    or ``.``; every name within ``NAME_MAX`` and the whole within ``PATH_MAX`` once a temporary
    sibling's suffix (:data:`TEMP_EXTRA`, and for a folder what it will hold) is added."""
    raw = os.fspath(path)
    if raw == "":
        raise OutputError(f"{option} is an empty path; give a path")
    if not folder and (raw.endswith(os.sep) or os.path.basename(raw) in (".", "..")):
        raise OutputError(f"{option} {raw} names a folder; give a file path")
    full = os.path.abspath(raw)
    name_max, path_max = _limit(full, "PC_NAME_MAX", 255), _limit(full, "PC_PATH_MAX", 4096)
    parts = [p for p in full.split(os.sep) if p]
    for part in parts[:-1]:
        if len(part.encode()) > name_max:
            raise OutputError(
                f"{option} {raw}: the folder name {part[:20]}... is {len(part.encode())} bytes, "
                f"longer than the file system's {name_max}; choose a shorter path"
            )
    name = parts[-1] if parts else ""
    if len(name.encode()) + TEMP_EXTRA > name_max:
        raise OutputError(
            f"{option} {raw}: the name is {len(name.encode())} bytes; with the temporary suffix "
            f"vae-pyro writes first (up to {TEMP_EXTRA} more) it exceeds the file system's "
            f"{name_max}; choose a name of at most {name_max - TEMP_EXTRA} bytes"
        )
    extra = TEMP_EXTRA + (FOLDER_INSIDE if folder else 0)
    if len(full.encode()) + extra >= path_max:
        raise OutputError(
            f"{option} {raw}: the path is {len(full.encode())} bytes; with what vae-pyro writes "
            f"below it (up to {extra} more) it exceeds the system's {path_max}; choose a shorter path"
        )


_KINDS = {
    stat.S_ISCHR: "a character device",
    stat.S_ISBLK: "a block device",
    stat.S_ISFIFO: "a FIFO",
    stat.S_ISSOCK: "a socket",
}


def _kind(mode: int) -> str:
    return next((word for test, word in _KINDS.items() if test(mode)), "not a regular file")


#: ``FS_IOC_GETFLAGS`` (linux/fs.h) and its immutable and append-only flags (``chattr +i``, ``+a``)
_GETFLAGS, _IMMUTABLE, _APPEND = 0x80086601, 0x10, 0x20


def immutable(path: Path) -> bool:
    """Whether ``path`` is immutable or append-only (``chattr +i``/``+a``): then no one, root included,
    can replace or remove it. False where the file system keeps no such flags."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        flags = fcntl.ioctl(fd, _GETFLAGS, b"\0" * 8)
        return bool(int.from_bytes(flags[:4], "little") & (_IMMUTABLE | _APPEND))
    except OSError:
        return False
    finally:
        os.close(fd)


def check_replaceable(path: Path, option: str, shown) -> None:
    """An existing output that a run will replace (with ``--force``, or a resumed checkpoint) can be:
    not immutable or append-only, which would fail the final rename after the work."""
    if path.exists() and immutable(path):
        raise OutputError(
            f"{option} {shown} is immutable or append-only (chattr +i/+a), so it cannot be replaced; "
            "clear the flag or choose another path"
        )


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
        raise OutputError(
            f"{option} {path}: cannot write in folder {folder} ({err.strerror or err}); choose another path"
        ) from None


def check_output_file(path: str | os.PathLike, option: str, *, force: bool = False, resumable: bool = False) -> Path:
    """``path`` can be written as a result file: its text sound (:func:`check_path_text`), not a
    folder nor anything but a regular file, its folder writable, claimed by this run (:func:`claim`),
    and not an existing file unless ``force``."""
    check_path_text(path, option)
    shown, path = Path(path), resolved(path)
    if path.is_dir():
        raise OutputError(f"{option} {shown} is a folder; give a file path")
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise OutputError(
            f"{option} {shown} is {_kind(path.stat().st_mode)}; vae-pyro replaces only regular files, "
            "even with --force: choose a file path"
        )
    writable_folder(path.parent, option, shown)
    claim(path, option)
    if path.exists() and not force:
        resume = ", --resume to continue from it," if resumable else ""
        raise OutputError(f"{option} {shown} already exists; pass --force to replace it{resume} or choose a new path")
    check_replaceable(path, option, shown)
    return shown


#: what a run folder holds (vae_pyro.experiment); --force replaces only a folder of these, so a
#: mistyped ``--out ~ --force`` cannot delete a folder of other files
#: what a run folder of `experiment` or `reproduce` holds (the only entries --force may delete)
RUN_FOLDER_ENTRIES = ("metrics.json", "metrics.csv", "results.json", "report.md", "checkpoints", "*.png")


def _foreign_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not any(p.match(pattern) for pattern in RUN_FOLDER_ENTRIES))


def _unwritable_inside(folder: Path) -> Path | None:
    """The first of ``folder`` and its subfolders that cannot be written (a run replacing it removes
    their entries: read-only or immutable, ``rmtree`` would fail after the work)."""
    for sub in (folder, *(p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink())):
        if not os.access(sub, os.W_OK | os.X_OK) or immutable(sub):
            return sub
    return None


def check_run_folder(path: str | os.PathLike, option: str = "--out", *, force: bool = False) -> Path:
    """``path`` can take a new run: its text sound (:func:`check_path_text`), not a file, not the
    current folder (or one holding it), its parent writable (the run is built beside it), claimed by
    this run (:func:`claim`), and not a folder holding files unless ``force``, which replaces only an
    earlier run's folder, and only one it can empty."""
    check_path_text(path, option, folder=True)
    shown, path = Path(path), resolved(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {shown} is a file; give a folder path")
    cwd = resolved(os.getcwd())
    if path == cwd or path in cwd.parents:
        raise OutputError(
            f"{option} {shown} is the current folder or holds it; a run folder is replaced whole "
            "when the run ends: give a new folder"
        )
    writable_folder(path.parent, option, shown)
    claim(path, option)
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise OutputError(
                f"{option} {shown} already holds files (an earlier run?); pass --force to replace "
                "the whole folder, or choose a new folder"
            )
        foreign = _foreign_entries(path)
        if foreign:
            raise OutputError(
                f"{option} {shown} holds files that are not a vae-pyro run (e.g. {foreign[0]!r}), "
                "which --force would delete; move them away or choose a new folder"
            )
        stuck = _unwritable_inside(path)
        if stuck is not None:
            raise OutputError(
                f"{option} {shown}: {stuck} cannot be written (read-only or immutable), so --force "
                "could not replace it; make it writable or choose a new folder"
            )
    return shown
