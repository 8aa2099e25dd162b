# cvdeploy — `make demo` and `make test` work on a fresh machine: they create .venv and install everything.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cvdeploy-installed

# torch 2.14.1 + torchvision 0.29.1 are the releases Ultralytics (an optional, dev-only dependency) can use here.
TORCH       := torch==2.14.1 torchvision==0.29.1
ULTRALYTICS := ultralytics==8.4.190
# Ultralytics' own requirements minus opencv-python (we use opencv-python-headless; both ship cv2).
ULTRA_DEPS  := pillow requests psutil polars ultralytics-thop

.PHONY: install demo test test-fast lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps $(ULTRALYTICS)
	$(BIN)/pip install -q $(ULTRA_DEPS)
	touch $(STAMP)

demo: install
	$(BIN)/cvdeploy demo

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

# every benchmark, its RESULT kept as JSON under benchmarks/results/, the README table regenerated (long: ~2 h, pruning trains)
bench: install
	$(BIN)/python benchmarks/run_all.py

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) demo-output runs .pytest_cache .mypy_cache .ruff_cache
