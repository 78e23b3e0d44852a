"""Fault injection: what survives a SIGKILL, a NaN and a hostile checkpoint.

* SIGKILL during training, then ``--resume``: the same weights and history as a run never stopped.
* SIGKILL during a checkpoint write: the previous checkpoint is intact, resuming from it equals an
  uninterrupted run, and the killed write's temporary is removed by the next save.
* A NaN mid-training (an absurd learning rate on resume): exit 2 with one line, and the last good
  checkpoint is left byte for byte.
* A checkpoint carrying a pickle payload: refused in one line, and the payload never runs.

Every output-path failure (a file where a folder is wanted, a folder that cannot be written, an
existing result without --force) is in ``test_outputs.py``. The models are tiny (784-8-2) so the
whole file stays within a few tens of seconds.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from vae_pyro.checkpoint import load_checkpoint
from vae_pyro.cli import main

TINY = [
    "--hidden",
    "8",
    "--z-dim",
    "2",
    "--batch-size",
    "100",
    "--seed",
    "5",
    "--binarization",
    "dynamic",
    "--no-progress",
]
ROOT = Path(__file__).resolve().parents[1]


def _child(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}  # the tests' own thread count
    return subprocess.Popen([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true (polled every 2 ms)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the child ended before the fault: {proc.stderr.read().decode()}"
        assert time.monotonic() < deadline, "the child never reached the point of the fault"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _same_run(a: dict, b: dict) -> None:
    assert a["epoch"] == b["epoch"]
    for name, tensor in a["model_state"].items():
        torch.testing.assert_close(tensor, b["model_state"][name], rtol=1e-5, atol=1e-6, msg=name)
    for ha, hb in zip(a["history"], b["history"], strict=True):
        assert ha["train_neg_elbo"] == pytest.approx(hb["train_neg_elbo"], rel=1e-5)
        assert ha["test_neg_elbo"] == pytest.approx(hb["test_neg_elbo"], rel=1e-5)


def test_sigkill_during_training_then_resume_equals_an_uninterrupted_run(tmp_path):
    ck, straight = tmp_path / "ck.pt", tmp_path / "straight.pt"
    proc = _child(["-m", "vae_pyro.cli", "train", *TINY, "--epochs", "4", "--checkpoint", str(ck)])
    _kill_when(proc, ck.exists)  # killed in epoch 2, just after epoch 1's checkpoint
    killed_at = load_checkpoint(ck)["epoch"]
    assert 1 <= killed_at < 4
    assert main(["train", *TINY, "--epochs", "4", "--checkpoint", str(ck), "--resume"]) == 0
    assert main(["train", *TINY, "--epochs", "4", "--checkpoint", str(straight)]) == 0
    _same_run(load_checkpoint(ck), load_checkpoint(straight))


WRITER = textwrap.dedent("""
    import sys

    import torch

    from vae_pyro.checkpoint import load_checkpoint
    from vae_pyro.cli import main
    from vae_pyro.outputs import atomic_write

    ck = sys.argv[1]
    assert main(["train", *sys.argv[2:], "--epochs", "1", "--checkpoint", ck]) == 0
    # rewrite the same checkpoint the way save_checkpoint does, made slow to write by a large extra
    # payload (100 MB), until killed: every completed rewrite is the epoch-1 checkpoint again
    payload = load_checkpoint(ck)
    payload["extra"]["pad"] = torch.zeros(25_000_000)
    while True:
        atomic_write(ck, lambda fh: torch.save(payload, fh))
""")


def test_sigkill_during_a_checkpoint_write_keeps_the_last_one_and_leaves_no_litter(tmp_path):
    ck, straight = tmp_path / "ck.pt", tmp_path / "straight.pt"

    def temporaries():
        # (the run's lock file, .ck.pt.lock, is not a temporary: it is there while train holds the path)
        return [p for p in tmp_path.iterdir() if p.name.startswith(".ck.pt.") and p.name != ".ck.pt.lock"]

    for _ in range(3):  # a kill that lands just after a rename leaves no temporary: try again
        ck.unlink(missing_ok=True)
        proc = _child(["-c", WRITER, str(ck), *TINY])
        _kill_when(proc, lambda: ck.exists() and bool(temporaries()))
        if temporaries():
            break
    assert temporaries(), "no kill landed inside a write"
    assert load_checkpoint(ck)["epoch"] == 1  # the last complete checkpoint, whole
    assert main(["train", *TINY, "--epochs", "2", "--checkpoint", str(ck), "--resume"]) == 0
    assert temporaries() == []  # the killed write's temporary was removed by the next save
    assert main(["train", *TINY, "--epochs", "2", "--checkpoint", str(straight)]) == 0
    resumed, reference = load_checkpoint(ck), load_checkpoint(straight)
    _same_run(resumed, reference)


def test_nan_mid_training_keeps_the_last_good_checkpoint(tmp_path, capsys):
    ck = tmp_path / "ck.pt"
    assert main(["train", *TINY, "--epochs", "1", "--checkpoint", str(ck)]) == 0
    before = ck.read_bytes()
    capsys.readouterr()
    # lr 1e9 overflows the encoder's variance within a few steps: the loss becomes inf/NaN
    assert main(["train", *TINY, "--epochs", "3", "--checkpoint", str(ck), "--resume", "--lr", "1e9"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "loss became" in err[0] and "epoch 2" in err[0], err
    assert ck.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


class _Payload:
    """Unpickling this creates ``marker``: what a hostile checkpoint would do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_payload_checkpoint_runs_nothing(tmp_path, capsys):
    from vae_pyro.checkpoint import FORMAT, VERSION

    evil, marker = tmp_path / "evil.pt", tmp_path / "payload-ran"
    torch.save({"format": FORMAT, "version": VERSION, "model_config": _Payload(marker)}, evil)
    assert main(["train", *TINY, "--checkpoint", str(evil), "--resume"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "corrupt or not a vae-pyro checkpoint" in err[0], err
    assert not marker.exists()
    # the payload is live: an unrestricted unpickler would have run it
    with open(evil, "rb") as fh:
        torch.load(fh, weights_only=False)
    assert marker.exists()
