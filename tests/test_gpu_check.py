"""scripts/gpu_check.sh's preparation, exercised here without a GPU: ``--dry-run`` installs the carried
wheels into a temporary target, imports Pyro from there and the package from the checkout, and prints
the commands it would run; without wheels it stops with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.sh"
WHEELS = sorted((REPO / ".whl").glob("*.whl"))


def _run(*args, env=None):
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHON": sys.executable, **(env or {})},
    )


def test_without_wheels_it_says_what_to_run(tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    proc = _run("--dry-run", str(tmp_path / "out"), env={"GPU_CHECK_WHEELS": str(empty)})
    assert proc.returncode == 2
    assert f"no wheels in {empty}: run 'make gpu-wheels'" in proc.stderr


def test_usage_errors_exit_2():
    assert _run().returncode == 2 and "usage: scripts/gpu_check.sh" in _run().stderr


def test_the_wheel_target_downloads_the_three_wheels_for_python_312():
    proc = subprocess.run(["make", "-n", "gpu-wheels"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    for part in ("--python-version 3.12", "--only-binary=:all:", "-d .whl", "pyro-ppl==1.9.2", "pyro-api", "mlxtend=="):
        assert part in proc.stdout


@pytest.mark.skipif(not WHEELS, reason="no wheels in .whl: run `make gpu-wheels` (needs the package index)")
def test_dry_run_installs_the_wheels_and_prints_the_plan(tmp_path):
    site, out = tmp_path / "site", tmp_path / "out"
    proc = _run("--dry-run", str(out), env={"GPU_CHECK_SITE": str(site)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {p.name for p in site.iterdir()} >= {"pyro", "pyroapi", "mlxtend"}
    env_log = (out / "environment.log").read_text()
    assert f"from {site}/pyro/__init__.py" in env_log  # Pyro from the wheels, not from any other install
    assert f"vae_pyro from {REPO}/vae_pyro/__init__.py" in env_log
    plan = (out / "summary.txt").read_text()
    for part in (
        "-m pytest -q -m cuda",
        "vae_pyro.cli compare --device cuda",
        f"--json {out}/compare.json",
        "scripts/benchmark.py --device cuda",
        f"--json {out}/bench-cuda.json",
        f"--markdown {out}/bench-cuda.md",
    ):
        assert part in plan
    assert not (out / "cuda-tests.log").exists()  # planned, not run


@pytest.mark.skipif(not WHEELS, reason="no wheels in .whl: run `make gpu-wheels` (needs the package index)")
def test_without_pip_the_wheels_are_unpacked(tmp_path):
    """A Python without pip (a bare GPU image) still gets the wheels: they are zip files."""
    wrapper = tmp_path / "python"
    wrapper.write_text(
        f'#!/bin/bash\nif [ "$1" = "-m" ] && [ "$2" = "pip" ]; then exit 1; fi\nexec {sys.executable} "$@"\n'
    )
    wrapper.chmod(0o755)
    site, out = tmp_path / "site", tmp_path / "out"
    proc = _run("--dry-run", str(out), env={"GPU_CHECK_SITE": str(site), "PYTHON": str(wrapper)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "pip is not available: unpacking the wheels" in (out / "install.log").read_text()
    assert f"from {site}/pyro/__init__.py" in (out / "environment.log").read_text()
