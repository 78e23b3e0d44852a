"""One writer per output, and paths checked as the OS will see them (issue 22): a second run on an
output another run holds is refused at once naming the holder; two outputs of one run that are one
file are refused; only regular files are replaced; empty paths, trailing slashes, names too long
once the temporary suffix is added, the current folder as a run folder: one line, exit 2, before
any work. Every case here failed on the code before the issue (it wrote, replaced or crashed late)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vae_pyro import outputs
from vae_pyro.cli import main
from vae_pyro.errors import OutputError

TINY = ["--epochs", "1", "--hidden", "8", "--z-dim", "2", "--batch-size", "1000", "--no-progress"]
#: a data set that cannot load: an output error proves the outputs were checked first
NO_DATA = ["--dataset", "idx:/no/such/folder"]
ROOT = Path(__file__).resolve().parents[1]


def _one_error_line(capsys, *needles):
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    for needle in needles:
        assert needle in err[0], err[0]
    return err[0]


def _hold(path: Path, pid: int = 4242) -> int:
    """Lock ``path``'s lock file as another writer would: a separate open file description."""
    fd = os.open(outputs.lock_file(outputs.resolved(path)), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, f"{pid}\n".encode(), 0)
    return fd


# --- one writer per output ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, name",
    [
        (["train", "--json"], "r.json"),
        (["train", "--checkpoint"], "ck.pt"),
        (["experiment", "--out"], "run"),
        (["nll", "--json"], "r.json"),
        (["compare", "--json"], "r.json"),
    ],
)
def test_an_output_held_by_another_run_is_refused_naming_it(args, name, tmp_path, capsys):
    target = tmp_path / name
    fd = _hold(target)
    try:
        assert main([*args, str(target), *TINY, *NO_DATA]) == 2
        _one_error_line(capsys, f"{target} is being written by another vae-pyro run (pid 4242)")
        assert not target.exists()
    finally:
        os.close(fd)
    assert main([*args, str(target), *TINY, *NO_DATA]) == 2  # released: now the data error
    _one_error_line(capsys, "MNIST folder /no/such/folder does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the lock file went with its run


def test_a_concurrent_resume_is_refused(tmp_path, capsys):
    ck = tmp_path / "ck.pt"
    assert main(["train", *TINY, "--checkpoint", str(ck)]) == 0
    before = ck.read_bytes()
    fd = _hold(ck)
    try:
        assert main(["train", *TINY, "--epochs", "2", "--checkpoint", str(ck), "--resume"]) == 2
        _one_error_line(capsys, "is being written by another vae-pyro run (pid 4242)")
    finally:
        os.close(fd)
    assert ck.read_bytes() == before


def test_two_real_processes_on_one_checkpoint_one_is_refused_at_once(tmp_path):
    """Two ``train --checkpoint same.pt``: the second starts while the first trains and is refused at
    once, naming the first's PID; then Ctrl-C ends the first with one line, exit 130, its lock removed."""
    ck = tmp_path / "same.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "vae_pyro.cli", "train", *TINY, "--epochs", "1000", "--checkpoint", str(ck)]
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ck.exists():  # the first has claimed the path and finished an epoch
            assert first.poll() is None, first.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"vae-pyro: error: --checkpoint {ck} is being written by another vae-pyro run (pid {first.pid}); "
            "wait for it to end or choose another path"
        ]
        first.send_signal(signal.SIGINT)
        _, err = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted; the last checkpoint" in lines[0] and "is intact" in lines[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same.pt"]  # no lock file, no temporary


def test_two_claims_in_one_process_through_separate_descriptors(tmp_path):
    target = tmp_path / "r.json"
    fd = _hold(target, pid=77)
    try:
        with pytest.raises(OutputError, match=r"--json .* another vae-pyro run \(pid 77\)"):
            outputs.claim(target, "--json")
    finally:
        os.close(fd)
    assert outputs.claim(target, "--json") == outputs.resolved(target)
    assert outputs.claim(target, "--json") == outputs.resolved(target)  # held already: a no-op
    outputs.release_claims()
    assert not outputs.lock_file(outputs.resolved(target)).exists()


# --- two outputs of one run that are one file ----------------------------------------------------


def test_checkpoint_and_json_on_one_path_are_refused(tmp_path, capsys):
    ck = tmp_path / "x"
    assert main(["train", *TINY, *NO_DATA, "--checkpoint", str(ck), "--json", str(ck)]) == 2
    _one_error_line(capsys, "are the same file")
    link = tmp_path / "link"
    link.symlink_to(ck)
    assert main(["train", *TINY, *NO_DATA, "--checkpoint", str(ck), "--json", str(link)]) == 2
    _one_error_line(capsys, "are the same file")
    assert (
        main(
            ["experiment", *TINY, *NO_DATA, "--out", str(tmp_path / "run"), "--json", str(tmp_path / "run" / "r.json")]
        )
        == 2
    )
    _one_error_line(capsys, "is inside --out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link"]


# --- only regular files are replaced -------------------------------------------------------------


def test_a_fifo_or_a_device_is_never_replaced_even_with_force(tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert main(["train", *TINY, *NO_DATA, "--json", str(fifo), "--force"]) == 2
    _one_error_line(capsys, f"--json {fifo} is a FIFO; vae-pyro replaces only regular files")
    assert fifo.is_fifo()
    assert main(["train", *TINY, *NO_DATA, "--json", "/dev/null", "--force"]) == 2
    _one_error_line(capsys, "--json /dev/null is a character device")
    assert Path("/dev/null").is_char_device()


def test_a_trailing_slash_names_a_folder(tmp_path, capsys):
    assert main(["train", *TINY, *NO_DATA, "--json", f"{tmp_path}/missing/"]) == 2
    _one_error_line(capsys, "names a folder; give a file path")
    assert main(["train", *TINY, *NO_DATA, "--checkpoint", f"{tmp_path}/."]) == 2
    _one_error_line(capsys, "names a folder; give a file path")
    assert list(tmp_path.iterdir()) == []


# --- paths as the OS will see them ---------------------------------------------------------------


@pytest.mark.parametrize("option", ["--json", "--checkpoint"])
def test_an_empty_path_is_refused(option, capsys):
    assert main(["train", *TINY, *NO_DATA, option, ""]) == 2
    _one_error_line(capsys, f"{option} is an empty path")


@pytest.mark.parametrize("length", [240, 255, 300])
def test_names_too_long_with_the_temporary_suffix_are_refused_before_work(length, tmp_path, capsys):
    name = "r" * length
    assert main(["train", *TINY, *NO_DATA, "--json", str(tmp_path / name)]) == 2
    _one_error_line(capsys, f"the name is {length} bytes", "choose a name of at most 233 bytes")
    assert main(["experiment", *TINY, *NO_DATA, "--out", str(tmp_path / name)]) == 2
    _one_error_line(capsys, f"the name is {length} bytes")


def test_a_name_that_fits_with_its_suffix_is_written(tmp_path):
    target = tmp_path / ("r" * (255 - outputs.TEMP_EXTRA))
    outputs.check_output_file(target, "--json")
    outputs.atomic_write_text(target, "{}\n")
    outputs.release_claims()
    assert target.read_text() == "{}\n"


def test_a_path_too_long_is_refused(tmp_path, capsys):
    deep = tmp_path / "/".join(["d" * 200] * 21)  # 21 * 201 > PATH_MAX 4096
    assert main(["train", *TINY, *NO_DATA, "--checkpoint", str(deep / "ck.pt")]) == 2
    _one_error_line(capsys, "exceeds the system's")


def test_the_current_folder_is_never_a_run_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path), ".."):
        assert main(["experiment", *TINY, *NO_DATA, "--out", out, "--force"]) == 2
        _one_error_line(capsys, "is the current folder or holds it")
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_a_symlinked_run_folder_is_replaced_through_the_link(tmp_path):
    real, link = tmp_path / "real", tmp_path / "link"
    real.mkdir()
    (real / "metrics.json").write_text("old")
    link.symlink_to(real)
    outputs.check_run_folder(link, force=True)
    with outputs.staged_folder(link) as stage:
        (stage / "metrics.json").write_text("new")
    outputs.release_claims()
    assert link.is_symlink() and (real / "metrics.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_an_immutable_run_folder_is_refused_before_work(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.json").write_text("{}")
    if subprocess.run(["chattr", "+i", str(run / "checkpoints")], capture_output=True).returncode:
        if os.geteuid() == 0:
            pytest.skip("chattr +i is not allowed here, and root writes into read-only folders")
        (run / "checkpoints").chmod(0o555)
    try:
        assert main(["experiment", *TINY, *NO_DATA, "--out", str(run), "--force"]) == 2
        _one_error_line(capsys, "cannot be written (read-only or immutable)")
    finally:
        subprocess.run(["chattr", "-i", str(run / "checkpoints")], capture_output=True)
        (run / "checkpoints").chmod(0o755)


def test_ctrl_c_in_an_experiment_removes_its_staging_folder_and_says_nothing_was_written(tmp_path):
    """SIGINT while the run folder is being built beside its target: one line, exit 130, and nothing
    left behind (no staging folder, no lock file, no run folder)."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vae_pyro.cli",
            "experiment",
            *TINY,
            "--epochs",
            "1000",
            "--train-estimators",
            "analytic",
            "--out",
            str(run),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".run.tmp-*/checkpoints/analytic.pt")):  # an epoch in, inside the stage
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["vae-pyro: interrupted; nothing was written"], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("option, resume", [("--json", False), ("--checkpoint", False), ("--checkpoint", True)])
def test_an_immutable_file_to_replace_is_refused_before_work(option, resume, tmp_path, capsys):
    target = tmp_path / "ck.pt"
    assert main(["train", *TINY, "--checkpoint", str(target)]) == 0
    capsys.readouterr()
    if subprocess.run(["chattr", "+i", str(target)], capture_output=True).returncode:
        pytest.skip("chattr +i is not allowed here")
    try:
        flags = ["--resume", "--epochs", "2"] if resume else ["--force"]
        assert main(["train", *TINY, *NO_DATA, option, str(target), *flags]) == 2
        _one_error_line(capsys, f"{option} {target} is immutable or append-only")
    finally:
        subprocess.run(["chattr", "-i", str(target)], capture_output=True)


def test_keyword_options_are_named_as_keywords_by_the_library_and_as_flags_by_the_cli(capsys):
    from vae_pyro import api

    with pytest.raises(OutputError, match=r"^resume=True needs checkpoint=PATH"):
        api.train(None, resume=True, dataset="idx:/no/such/folder")
    assert main(["train", *TINY, *NO_DATA, "--resume"]) == 2
    _one_error_line(capsys, "vae-pyro: error: --resume needs --checkpoint PATH, the checkpoint to continue from")


def test_a_symlinked_result_file_is_replaced_through_the_link(tmp_path):
    real, link = tmp_path / "real.json", tmp_path / "link.json"
    real.write_text("old")
    link.symlink_to(real)
    outputs.check_output_file(link, "--json", force=True)
    outputs.atomic_write_text(link, "new")
    outputs.release_claims()
    assert link.is_symlink() and real.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.json", "real.json"]
