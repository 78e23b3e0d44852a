"""`vae-pyro --version` prints the installed distribution's version (setup.cfg's) and exits 0."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_the_installed_distributions():
    declared = configparser.ConfigParser()
    declared.read(ROOT / "setup.cfg")
    out = subprocess.run(
        [sys.executable, "-m", "vae_pyro", "--version"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"vae-pyro {declared['metadata']['version']}"
