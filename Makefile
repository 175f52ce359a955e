# Common tasks. `make demo` and `make test` each do all set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Local TinyStories files; empty means the Hugging Face hub.
TINYGPT_DATA_DIR ?=
export TINYGPT_DATA_DIR
DEMO_DIR ?= checkpoints/demo
SEED ?= 42

.PHONY: help setup setup-dev demo train eval sample test test-fast lint format env bench clean

help:
	@echo "make demo   - install, prepare TinyStories, train configs/demo.yaml, evaluate, sample"
	@echo "make test   - install with dev extras and run the test suite"
	@echo "make lint | format | env | bench | clean"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev,torch]"
	@touch $@ $(VENV)/.installed

setup: $(VENV)/.installed

setup-dev: $(VENV)/.installed-dev

demo: setup
	$(BIN)/tinygpt env --no-hub
	$(BIN)/tinygpt data prepare --config configs/demo.yaml
	$(BIN)/tinygpt train --config configs/demo.yaml --save_dir $(DEMO_DIR) --seed $(SEED) --resume auto
	$(BIN)/tinygpt eval --config configs/demo.yaml --checkpoint_dir $(DEMO_DIR) --output_dir results/demo_eval --full
	$(BIN)/tinygpt sample --checkpoint $(DEMO_DIR)/best --prompt "Once upon a time" --num-samples 3 --seed $(SEED)

train: setup
	$(BIN)/tinygpt train --config configs/base_config.yaml --save_dir checkpoints/baseline --seed $(SEED)

test: setup-dev
	$(BIN)/python -m pytest

test-fast: setup-dev
	$(BIN)/python -m pytest -m "not slow"

lint: setup-dev
	$(BIN)/ruff check tinygpt_mlx tests benchmarks scripts

format: setup-dev
	$(BIN)/ruff format tinygpt_mlx tests benchmarks scripts

env: setup
	$(BIN)/tinygpt env

bench: setup
	$(BIN)/tinygpt bench

clean:
	rm -rf $(VENV) data_cache checkpoints results .pytest_cache
