# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv when missing and (re)installs when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e ".[dev,lite,serve,onnx,tensorboard,mlflow,dicom,tiff]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/headstart demo

test: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

format: $(STAMP)
	$(BIN)/ruff format src tests
	$(BIN)/ruff check --fix src tests

clean:
	rm -rf $(VENV) headstart-demo headstart-train headstart-compare .pytest_cache .ruff_cache
