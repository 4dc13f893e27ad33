# One-command entry points. `make help` lists them.
# Everything runs in .venv, created from requirements.lock by `make setup` (on first use of any target).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# Parameters of `make reproduce` (empty = the paper case; any value writes to results/runs/<tag>/)
HOMES       ?=
SCENARIOS   ?=
PROFIT_RATE ?=
SEED        ?=
DATE        ?=
# `make bench SAVE=1` writes results/bench/; without it the benchmark only prints
SAVE        ?=

.DEFAULT_GOAL := help
.PHONY: help setup test unit nbval reproduce bench bench-study lab data clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  parameters of reproduce: HOMES=10 SCENARIOS=10 PROFIT_RATE=0.2 SEED=0 DATE=2017-06-13"

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (desmarket)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)  ## create .venv with the pinned packages and the desmarket library (editable)

test: $(STAMP)  ## unit tests + nbval regression over the committed notebooks (the CI command)
	$(PY) -m pytest -q tests
	$(MAKE) --no-print-directory nbval

nbval: $(STAMP)  ## re-run the committed notebooks and compare their outputs (writes to a temporary folder)
	DESMARKET_OUTPUT_ROOT=$$(mktemp -d) $(PY) -m pytest -q --nbval --nbval-current-env \
	  --nbval-sanitize-with notebooks/sanitize.cfg notebooks

unit: $(STAMP)  ## unit tests only
	$(PY) -m pytest -q tests

reproduce: $(STAMP)  ## run the notebook chain with papermill; regenerates every table and figure
	$(PY) scripts/reproduce.py $(if $(HOMES),--homes $(HOMES)) $(if $(SCENARIOS),--scenarios $(SCENARIOS)) \
	  $(if $(PROFIT_RATE),--profit-rate $(PROFIT_RATE)) $(if $(SEED),--seed $(SEED)) $(if $(DATE),--date $(DATE))

bench: $(STAMP)  ## time, memory and iterations of each method, 100-10,000 homes x 10 scenarios (SAVE=1 writes results/bench/)
	$(PY) scripts/bench.py $(if $(SAVE),--save)

bench-study: $(STAMP)  ## sensitivity table: a rebuilt case per row against one Workbench (10 and 200 homes; prints only)
	$(PY) scripts/bench_study.py

lab: $(STAMP)  ## open JupyterLab on the notebooks with the project's environment
	$(VENV)/bin/jupyter lab notebooks

data: $(STAMP)  ## rebuild data/raw/ from the pinned CityLearn wheel (needs PyPI; checks its sha256)
	$(PY) scripts/build_raw_data.py

clean:  ## remove .venv and caches (keeps committed results)
	rm -rf $(VENV) .pytest_cache data/.cache results/runs
