# labcore: `make help` lists the targets. Everything runs inside .venv, created on first use.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# No PROFILE: labcore picks full where a CUDA GPU or a Ray cluster is available, quick otherwise, and says so.
PROFILE ?=
ONLY ?=
# STUDIES=lab_cnn,lab_resnet: only those studies' runs, and only the pages' sections about them (plan, train, report, verify).
STUDIES ?=
# No EXECUTOR: ray where this machine trains several runs at once and 10+ minutes are pending (or RAY_ADDRESS is set), else local.
EXECUTOR ?=
CPUS_PER_RUN ?=
GPUS_PER_RUN ?=
RETRY_FAILED ?=
# DETERMINISTIC=1: deterministic algorithms, no cuDNN benchmark, no TF32 (bit-for-bit repeatable on one GPU; slower).
DETERMINISTIC ?=
# FUSE=auto|on|off: train a config's seeds as one batched model (auto: where measured to pay; README "Fused seeds and packing").
FUSE ?=
# EXACT=1: make plan times every architecture now instead of estimating the untimed ones from their FLOPs.
EXACT ?=
LAB_PORT ?= 8888
# make bundle: what the offline GPU node already has, as `pip freeze` there wrote it (default: the lent H200's list).
HAVE ?=
PYTHON_VERSION ?=
FORCE ?=
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

# make gpu-check: cuda on the lent GPU machine; DEVICE=cpu runs the same check on tiny sizes here.
DEVICE ?= cuda
GPU_CHECK_OUT ?= $(or $(OUT),reports/gpu-check)
# The GPU machine has no .venv (its own python3 holds PyTorch); here the project's environment is used.
CHECK_PYTHON = $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)

.PHONY: help venv plan train report check-report pdf test lab clean distclean bundle gpu-check verify diff

help: ## show this help
	@echo "labcore: reproducible reports for the deep-learning lab"
	@echo
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo
	@echo "Variables: PROFILE=smoke|quick|lab|full  ONLY=01_mlp_baseline,...  STUDIES=lab_cnn,...  EXECUTOR=local|ray  CPUS_PER_RUN  GPUS_PER_RUN"
	@echo "           RETRY_FAILED=1  DETERMINISTIC=1  FUSE=auto|on|off  FORCE=1 (report: every notebook; clean: anyway)"
	@echo "           EXACT=1 (plan)  SAMPLE=1|all SEED=N (verify)  A=... B=... (diff)  LAB_PORT=8888 (lab)  PYTEST_ARGS=... (test)"
	@echo "           HAVE=<pip freeze of the node> PYTHON_VERSION=3.12.3 (bundle)  DEVICE=cuda|cpu OUT=<folder> (gpu-check)"
	@echo "           Ray cluster: RAY_ADDRESS=host:port with RAY_AUTH_MODE=token"
	@echo "Data: set LABCORE_DATA to a folder with MNIST/ and cifar10/ (an absolute path: LABCORE_DATA=\$$(realpath ../shared/data))."

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e '.[dev]'
	@touch $@

venv: $(STAMP) ## create .venv (pip, from pyproject.toml) if missing or stale

plan: $(STAMP) ## print the runs PROFILE needs: stored, pending, estimated compute here (trains nothing; JSON=1: the plan itself)
	$(if $(JSON),@)$(BIN)/python -m labcore plan --profile '$(PROFILE)' --only '$(ONLY)' --studies '$(STUDIES)'$(if $(EXACT), --exact)$(if $(FUSE), --fuse $(FUSE))$(if $(JSON), --json)

# The options train and report share, only those given: the command make echoes stays one line.
TRAIN_OPTS = $(strip --executor '$(EXECUTOR)' $(if $(CPUS_PER_RUN),--cpus-per-run $(CPUS_PER_RUN)) \
	$(if $(GPUS_PER_RUN),--gpus-per-run $(GPUS_PER_RUN)) $(if $(DETERMINISTIC),--deterministic) $(if $(FUSE),--fuse $(FUSE)))

train: $(STAMP) ## train every pending run of PROFILE's plan (EXECUTOR=local|ray; RAY_ADDRESS for a cluster)
	$(BIN)/python -m labcore train --profile '$(PROFILE)' --only '$(ONLY)' --studies '$(STUDIES)' $(TRAIN_OPTS)$(if $(RETRY_FAILED), --retry-failed)

report: $(STAMP) ## train what PROFILE's notebooks (or ONLY=...) need and is not stored (as make train), then run them
	$(BIN)/python -m labcore report --profile '$(PROFILE)' --only '$(ONLY)' --studies '$(STUDIES)' $(TRAIN_OPTS)$(if $(FORCE), --force)

check-report: $(STAMP) ## open PROFILE's built reports in headless Chromium: checks, screenshots in reports/<profile>/screenshots
	$(BIN)/python -m labcore check-report --profile '$(PROFILE)'

pdf: $(STAMP) ## print PROFILE's built pages to A4 PDFs: reports/<profile>/pdf/*.pdf and labcore-<profile>.pdf (index first)
	$(BIN)/python -m labcore pdf --profile '$(PROFILE)'

test: $(STAMP) ## run the whole test suite: unit tests, end-to-end report, notebooks (nbmake)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lab: $(STAMP) ## JupyterLab on the project (notebooks/ open; reports/, parameters/ a click away; LAB_PORT=8888); prints the URL
	$(BIN)/python -m labcore lab --port $(LAB_PORT)

verify: $(STAMP) ## check every run of PROFILE, re-train a sample (SAMPLE=1 per setting, or all; SEED=N) and compare
	$(BIN)/python -m labcore verify --profile '$(PROFILE)' --only '$(ONLY)' --studies '$(STUDIES)' --sample '$(or $(SAMPLE),1)' $(if $(SEED),--seed $(SEED))

diff: $(STAMP) ## compare two builds number by number: A=reports/smoke B=<other reports/smoke>; writes reports/diff-*.html
	$(BIN)/python -m labcore diff '$(A)' '$(B)'

bundle: $(STAMP) ## write .gpu-bundle/ (git-ignored): wheels and data an offline GPU node lacks (HAVE=its pip freeze)
	$(BIN)/python -m labcore bundle $(if $(HAVE),--have '$(HAVE)') $(if $(PYTHON_VERSION),--python $(PYTHON_VERSION))

gpu-check: ## prove the GPU path in one command: gpu-check.json and .log in reports/gpu-check or $OUT (DEVICE=cpu: tiny, here)
	$(CHECK_PYTHON) -m labcore gpu-check --device $(DEVICE) --out '$(GPU_CHECK_OUT)'

clean: ## remove generated reports and W&B offline runs (refuses while offline runs are unsynced; FORCE=1 deletes anyway)
	@if [ -z "$(FORCE)" ] && [ -x $(BIN)/python ]; then $(BIN)/python -m labcore check-clean; fi
	rm -rf reports .cache/wandb .pytest_cache

distclean: clean ## also remove .venv, the decoded-data cache and the run store (.cache)
	rm -rf $(VENV) .cache *.egg-info
