"""docs/extending.md's worked examples (a new setting, prior, dataset, network, estimator and check) run
as written, in a fresh interpreter so the names they register do not leak into the other tests' registries."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


@pytest.mark.slow  # ~40 s on a busy 2-core machine: trains a small VAE and runs the engine twice
def test_the_extending_guide_runs_as_written():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 7
    out = subprocess.run([sys.executable, "-c", "\n".join(blocks)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
