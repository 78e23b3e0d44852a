"""--log-dir: every number of a command's result as a TensorBoard scalar, read back with TensorBoard's
own event reader (EventAccumulator) and compared with the same run's JSON; without TensorBoard, one
line and exit 2 before any work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vae_pyro.cli import main
from vae_pyro.tblog import scalars

ROOT = Path(__file__).resolve().parents[1]


def read_events(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag under ``log_dir`` -> [(step, value)], through TensorBoard's reader."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    events = accumulator.EventAccumulator(str(log_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_scalars_tag_by_place_step_by_epoch_and_leave_the_configuration_out():
    result = {
        "seed": 3,
        "settings": {"training.epochs": 2},
        "verdict": "pass",
        "flag": True,
        "history": [{"epoch": 1, "loss": 2.0, "test": None}, {"epoch": 2, "loss": 1.5, "test": 1.0}],
        "estimators": [
            {"name": "tmf", "neg_elbo_mean": 90.0, "checks": [{"name": "gradient", "estimator": "tmf", "value": 1.2}]}
        ],
        "nan": float("nan"),
    }
    assert sorted(scalars(result, "compare")) == sorted(
        [
            ("compare/history/loss", 2.0, 1),
            ("compare/history/loss", 1.5, 2),
            ("compare/history/test", 1.0, 2),
            ("compare/estimators/tmf/neg_elbo_mean", 90.0, 0),
            ("compare/estimators/tmf/checks/gradient/value", 1.2, 0),
        ]
    )


def test_train_log_dir_writes_the_per_epoch_losses_tensorboard_reads_back(tmp_path):
    pytest.importorskip("tensorboard")
    out, log_dir = tmp_path / "train.json", tmp_path / "tb"
    assert (
        main(
            [
                "train",
                "--dataset",
                "digits8x8",
                "--epochs",
                "2",
                "--no-progress",
                "--json",
                str(out),
                "--log-dir",
                str(log_dir),
            ]
        )
        == 0
    )
    result, events = json.loads(out.read_text()), read_events(log_dir)
    for field in ("train_neg_elbo", "test_neg_elbo"):
        expected = [(h["epoch"], h[field]) for h in result["history"]]
        steps, values = zip(*events[f"train/history/{field}"])
        assert list(steps) == [1, 2]
        assert list(values) == pytest.approx([v for _, v in expected], rel=1e-6)  # events hold float32


@pytest.mark.slow
def test_compare_log_dir_writes_every_estimators_values_and_gradient_statistics(tmp_path):
    pytest.importorskip("tensorboard")
    out, log_dir = tmp_path / "compare.json", tmp_path / "tb"
    assert (
        main(
            [
                "compare",
                "--dataset",
                "digits8x8",
                "--epochs",
                "1",
                "--draws",
                "5",
                "--grad-draws",
                "5",
                "--estimators",
                "analytic,trace",
                "--no-progress",
                "--json",
                str(out),
                "--log-dir",
                str(log_dir),
            ]
        )
        == 0
    )
    result, events = json.loads(out.read_text()), read_events(log_dir)
    for record in result["estimators"]:
        for field in ("neg_elbo_mean", "neg_elbo_se", "grad_agreement", "ms_per_step"):
            ((step, value),) = events[f"compare/estimators/{record['name']}/{field}"]
            assert step == 0 and value == pytest.approx(record[field], rel=1e-6)
    assert [s for s, _ in events["compare/training/history/train_neg_elbo"]] == [1]


def test_log_dir_without_tensorboard_is_one_line_and_exit_2_before_any_work(tmp_path):
    # TensorBoard made unimportable in a fresh interpreter (sys.modules[name] = None makes import fail)
    out = tmp_path / "r.json"
    code = (
        "import sys; sys.modules['tensorboard'] = None; from vae_pyro.cli import main; "
        f"sys.exit(main(['compare', '--log-dir', {str(tmp_path / 'tb')!r}, '--json', {str(out)!r}]))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--log-dir" in lines[0] and "pip install 'vae-pyro[tensorboard]'" in lines[0]
    assert done.stdout == "" and not out.exists() and not (tmp_path / "tb").exists()
