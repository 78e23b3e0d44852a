# vae-pyro: `make compare` runs the main job, `make test` the test suite; each builds .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU wheel of torch 2.13.0 is on local disk on our machines; an unpinned torch would pull a
# multi-GB CUDA build. Override with e.g. `make TORCH=torch==2.13.0+cu126 ...` on a GPU machine.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: venv compare test test-fast test-slow validity-docs clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

# The estimator comparison on the embedded digits (about a minute on 2 CPU cores); --force: each run
# replaces the previous runs/compare.json (vae-pyro refuses to overwrite results otherwise).
compare: venv
	$(BIN)/vae-pyro compare --json runs/compare.json --force

# Fast set, then the bounded slow set (statistical tests with many draws); under 10 minutes.
test: venv
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python -m pytest -q -m slow

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: venv
	$(BIN)/python -m pytest -q -m slow

# docs/validity.md, generated from the code (tests/test_validity.py fails when it is stale).
validity-docs: venv
	$(BIN)/python scripts/validity_matrix.py

clean:
	rm -rf $(VENV) runs .pytest_cache *.egg-info
