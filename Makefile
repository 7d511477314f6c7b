# Thin wrappers: every target's logic lives in the Python packages.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build by default (installs from local disk here); override for a CUDA build, e.g. TORCH_SPEC='torch>=2.4'.
TORCH_SPEC ?= torch==2.13.0
MODEL ?= fsrcnn
SCALE ?= 4
DATA ?=
INPUT ?=
ARGS ?=

.PHONY: setup demo test train eval export run bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/sr-run --demo --scale $(SCALE) -o demo_out $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(ARGS)

train: setup
	$(BIN)/sr-train --model $(MODEL) --scale $(SCALE) $(if $(DATA),--data $(DATA)) $(ARGS)

eval: setup
	$(BIN)/sr-eval $(or $(DATA),../shared/data/Set5) --scale $(SCALE) --model $(MODEL) $(ARGS)

export: setup
	$(BIN)/sr-export --model $(MODEL) --scale $(SCALE) $(ARGS)

run: setup
	$(BIN)/sr-run $(INPUT) --scale $(SCALE) $(ARGS)

bench: setup
	$(BIN)/sr-bench --quick --out bench_out $(ARGS)

lint: setup
	$(BIN)/python -m ruff check . || echo "ruff not installed: pip install ruff"

clean:
	rm -rf $(VENV) build *.egg-info demo_out bench_out
