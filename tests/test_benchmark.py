"""The benchmark script runs end to end and its JSON is consistent (ratios are to the analytic row of
the same batch, examples/s follows from ms/step). No timing is asserted: timings belong to the
benchmark's recorded runs, not to unit tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "scripts" / "benchmark.py"


def test_benchmark_json_is_consistent(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--batch-sizes", "8,16",
                           "--estimators", "trace,jit_tmf", "--steps", "2", "--repeats", "1", "--no-memory",
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["device_name"]
    rows = result["results"]
    assert {(r["batch_size"], r["estimator"]) for r in rows} == {
        (b, e) for b in (8, 16) for e in ("analytic", "trace", "jit_tmf")}
    for r in rows:
        base = next(x for x in rows if x["batch_size"] == r["batch_size"] and x["estimator"] == "analytic")
        assert r["ratio_to_analytic"] == pytest.approx(r["ms_per_step"] / base["ms_per_step"])
        assert r["examples_per_s"] == pytest.approx(r["batch_size"] / r["ms_per_step"] * 1e3)
    assert "x analytic" in proc.stdout and "device: cpu" in proc.stdout


def test_benchmark_rejects_unknown_estimators():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--estimators", "nope"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "unknown estimator 'nope'" in proc.stderr
