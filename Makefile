# Thin wrappers: every target's logic lives in the Python packages.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A matching torch/torchvision pair (spandrel, for community models, imports torchvision): these two
# install from local disk here in about a minute (CUDA builds that also run on CPU-only machines).
# Bring your own with e.g. TORCH_SPEC='torch>=2.4 torchvision' and your CUDA index; they must match.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
MODEL ?= fsrcnn
SCALE ?= 4
# Training data: the classic 291 set (T91 + BSD200) and Set5 for validation when ../shared/data is present,
# else sr-train's embedded default (scikit-image photos).
DATA ?= $(wildcard ../shared/data/T91 ../shared/data/BSD200)
VAL ?= $(wildcard ../shared/data/Set5)
INPUT ?=
ARGS ?=

.PHONY: setup demo test train eval export run bench lint clean gpu-check gpu-check-dry gpu-pack

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/sr-run --demo --scale $(SCALE) -o demo_out $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(ARGS)

train: setup
	$(BIN)/sr-train --model $(MODEL) --scale $(SCALE) $(if $(DATA),--data $(DATA)) $(if $(VAL),--val $(VAL)) $(ARGS)

eval: setup
	$(BIN)/sr-eval $(or $(EVAL_DATA),../shared/data/Set5) --scale $(SCALE) --model $(MODEL) $(ARGS)

export: setup
	$(BIN)/sr-export --model $(MODEL) --scale $(SCALE) $(ARGS)

run: setup
	$(BIN)/sr-run $(INPUT) --scale $(SCALE) $(ARGS)

bench: setup
	$(BIN)/sr-bench --quick --out bench_out $(ARGS)

# The prepared GPU run (issue 17; README "GPU check"). No setup dependency: the GPU machine has torch
# but nothing installed from this project, and no index to install from.
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)
gpu-check:
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) scripts/gpu_check.py --out gpu_out $(ARGS)

gpu-check-dry:
	PYTHONPATH=$(CURDIR) $(GPU_PYTHON) scripts/gpu_check.py --dry-run --out gpu_out_dry $(ARGS)

gpu-pack:
	PYTHON=$(GPU_PYTHON) bash scripts/gpu_pack.sh $(ARGS)

lint: setup
	$(BIN)/python -m ruff check . || echo "ruff not installed: pip install ruff"

clean:
	rm -rf $(VENV) build *.egg-info demo_out bench_out
