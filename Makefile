# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1

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
	$(BIN)/python -m pytest -q

.PHONY: install demo test
