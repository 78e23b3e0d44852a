"""The claims table (docs/claims.md: each claim of the README and the docs) names a test for each claim:
every test it names must exist, so the table cannot point at a test that was renamed or removed."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _claims_section() -> str:
    text = (ROOT / "docs" / "claims.md").read_text()
    return text[text.index("# Claims table") :]


def test_every_test_the_claims_table_names_exists():
    named = []
    for line in _claims_section().splitlines():
        if not line.startswith("| ") or line.startswith("| claim") or line.startswith("|---"):
            continue
        current = None
        for file, name in re.findall(r"`(?:(test_\w+\.py))?::(test_\w+)`", line):
            current = file or current
            assert current, f"a '::{name}' with no file before it: {line}"
            named.append((current, name))
    assert len(named) > 60
    missing = [(f, n) for f, n in named if not re.search(rf"^def {n}\(", (ROOT / "tests" / f).read_text(), flags=re.M)]
    assert not missing, missing
