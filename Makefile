# OpenMOS developer entry points. Each target (re)creates the virtual environment when pyproject changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## built-in local pool + CPU-backend agent, live status (Ctrl-C stops)
	$(BIN)/mos demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

browser:  ## Debian chromium for the web page tests (installed when missing and root)
	scripts/ensure-chromium.sh

test: lint browser  ## ruff + mypy + pytest
	$(BIN)/pytest -q

bench: $(STAMP)  ## every benchmark under benchmarks/
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
