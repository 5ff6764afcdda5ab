# ppl_dgp developer tasks. From a fresh clone, `make run` and `make test` do all the set-up.
#
# The interpreter is the pyenv `python` selected by .python-version (3.12.1); override with
# `make PYTHON=/path/to/python3.12 ...`.

PYTHON ?= python
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCKENV := .lockenv

.DEFAULT_GOAL := help
.PHONY: help venv run test bench lint format lock clean

help:
	@echo "make run    compare SVI/SGHMC/Laplace/MAP/ensemble with NUTS on a 2-layer DGP (motorcycle data): out/compare/report.md"
	@echo "make test   run the test suite (fast tests; 'make test PYTEST_ARGS=\"-m slow\"' for slow; XDIST= for one process)"
	@echo "make bench  run the benchmarks"
	@echo "make lint   ruff check + ruff format --check"
	@echo "make lock   regenerate requirements.lock from pyproject.toml (uv pip compile)"
	@echo "make venv   create .venv from requirements.lock (done automatically by run/test)"

venv: $(STAMP)

# Re-installs only when pyproject.toml or requirements.lock change.
$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; ok = sys.version_info >= (3, 12); print("using Python", sys.version.split()[0], "at", sys.executable); sys.exit(0 if ok else 1)' \
		|| { echo "error: '$(PYTHON)' must be Python >= 3.12 (install 3.12.1 with pyenv; see .python-version) or pass PYTHON=..." >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $@

run: $(STAMP)
	PYTHONHASHSEED=0 $(BIN)/ppl-dgp compare --model dgp --data motorcycle --out out/compare

# One pytest-xdist worker per core. Each test file runs whole on one worker, its group, so its
# module-scoped fits and compiled programs are built once; the contract matrix splits itself in
# four (tests/conftest.py). The longest groups go first; a fixed hash seed lets the workers and
# the notebooks share JAX's compilation cache. PYTHONSAFEPATH=1 is `python -P` for the workers
# too: the repository root stays off sys.path.
XDIST ?= -n auto --dist loadgroup

test: $(STAMP)
	PYTHONSAFEPATH=1 PYTHONHASHSEED=0 $(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/ppl-dgp bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Lock the runtime + dev dependencies for CPython 3.12 on Linux x86_64, with hashes, resolved
# against uv's default index (PyPI unless UV_INDEX_URL says otherwise). uv lives in its own
# scratch venv so it never enters the project's environment.
lock:
	@test -x $(LOCKENV)/bin/uv || { $(PYTHON) -m venv $(LOCKENV) && $(LOCKENV)/bin/python -m pip install --quiet uv; }
	$(LOCKENV)/bin/uv pip compile pyproject.toml --extra dev \
		--python-version 3.12 --python-platform x86_64-unknown-linux-gnu \
		--generate-hashes \
		--custom-compile-command "make lock" -o requirements.lock

clean:
	rm -rf $(VENV) $(LOCKENV) build dist *.egg-info .pytest_cache .ruff_cache
