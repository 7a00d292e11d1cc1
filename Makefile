# OpenMOS developer entry points. Each target (re)creates the virtual environment when pyproject changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean browser supply-chain fuzz

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## built-in local pool + CPU-backend agent, live status (Ctrl-C stops)
	$(BIN)/mos demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/mypy

browser:  ## Debian chromium and postgresql for the browser and store tests (installed when missing and root)
	scripts/ensure-debian.sh chromium chromium "the browser tests"
	scripts/ensure-debian.sh initdb postgresql "the PostgreSQL store tests"
	scripts/ensure-debian.sh mosquitto mosquitto "the MQTT / Home Assistant tests"

supply-chain: $(STAMP)  ## secrets, hard-coded wallets/pools, undeclared endpoints, pip-audit, SBOM
	$(BIN)/python scripts/supply_chain.py

test: lint browser supply-chain  ## ruff + mypy + supply-chain checks + pytest
	$(BIN)/pytest -q

fuzz: $(STAMP)  ## 100,000 hypothesis cases over every Stratum V1 field the agent parses (CI runs 10,000)
	FUZZ_EXAMPLES=100000 $(BIN)/pytest -q tests/test_stratum_fuzz.py

bench: $(STAMP)  ## every benchmark under benchmarks/
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
