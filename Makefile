# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1
# pytest-xdist workers (one per CPU on a 2-core machine); each test file stays on one worker so that its
# module-scoped fits run once. JOBS=0 runs in one process.
JOBS ?= auto
PYTEST := $(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile

$(BIN)/bayesmicro: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,trl]'
	touch $@

install: $(BIN)/bayesmicro

demo: install
	$(BIN)/bayesmicro fit

test: install
	$(PYTEST)

# everything, the long statistical cases marked `slow` included
test-all: install
	$(PYTEST) -m ''

.PHONY: install demo test test-all
