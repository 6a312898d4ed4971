# labcore: `make help` lists the targets. Everything runs inside .venv, created on first use.
.DEFAULT_GOAL := help
SHELL := /bin/bash

PROFILE ?= full
ONLY ?=
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

# Notebook kernels run in notebooks/, so a relative data root must be made absolute here;
# .venv/bin goes first on PATH so the 'python3' kernel is this project's interpreter.
ifdef LABCORE_DATA
export LABCORE_DATA := $(abspath $(LABCORE_DATA))
endif
export PATH := $(BIN):$(PATH)

.PHONY: help venv report test lab clean distclean

help: ## show this help
	@echo "labcore: reproducible reports for the deep-learning lab"
	@echo
	@echo "  make report [PROFILE=smoke|quick|full] [ONLY=01_mlp_baseline]   run notebooks, render reports/<profile>/"
	@echo "  make test                                                     unit tests + pytest --nbmake (what CI runs)"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'
	@echo
	@echo "Data: set LABCORE_DATA to a folder with MNIST/ and cifar10/ (e.g. LABCORE_DATA=../shared/data)."

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	@touch $@

venv: $(STAMP) ## create .venv (pip, from pyproject.toml) if missing or stale

report: $(STAMP) ## run every notebook (or ONLY=...) with PROFILE's parameters (default full)
	$(BIN)/python -m labcore.report --profile '$(PROFILE)' --only '$(ONLY)'

test: $(STAMP) ## run the whole test suite: unit tests, end-to-end report, notebooks (nbmake)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lab: $(STAMP) ## open JupyterLab on the notebooks with the project's kernel
	$(BIN)/jupyter lab notebooks/

clean: ## remove generated reports and W&B offline runs (keeps .venv, data cache and run store)
	rm -rf reports .cache/wandb .pytest_cache

distclean: clean ## also remove .venv, the decoded-data cache and the run store (.cache)
	rm -rf $(VENV) .cache *.egg-info
