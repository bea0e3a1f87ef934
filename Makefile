# The two commands: `make run` (set up + dvc repro) and `make test` (set up + test suite).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PROFILE ?=
# the slowest tests in every run's output (CI included): the suite must stay under 25 min
PYTEST_ARGS ?= --durations=25
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1

.PHONY: run test test-nightly setup bench lock clean-runs mlflow-ui optuna-ui

setup: $(STAMP)

# Pinned, tested dependency set: requirements.lock (torch 2.14 + torchvision 0.29 registry builds).
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

# PROFILE="a b": one DVC experiment (dvc exp run -S key=value) with profiles/a.yaml then b.yaml laid
# over params.yaml (a later profile wins on a shared key; a bad profile stops before DVC starts);
# params.yaml's bytes are restored afterwards, the values stay in the experiment and dvc.lock.
run: $(STAMP)
ifeq ($(PROFILE),)
	$(BIN)/dvc repro
else
	$(BIN)/python -m defectops.profile_args --run $(PROFILE)
endif
	$(BIN)/dvc metrics show
	$(BIN)/defectops report

# tests/ensure_chromium.sh: installs Debian's chromium for the browser UI tests where apt-get can;
# tests/ensure_labelstudio.sh: the Label Studio server in its own venv (.venv-labelstudio, pins in
# infra/labelstudio/requirements.txt) for the review tests (both never fail; without them those tests skip)
test: $(STAMP)
	@bash tests/ensure_chromium.sh
	@bash tests/ensure_labelstudio.sh
	$(BIN)/python -m pytest -m "not nightly" $(PYTEST_ARGS)

# The long end-to-end runs (retrain through a worker, crash recovery, two Optuna workers, ablation
# grids: about 12 min here) that `make test` and CI leave out; run them nightly and before a release.
test-nightly: $(STAMP)
	$(BIN)/python -m pytest -m nightly $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.stages

# Re-pin after changing dependencies: resolves, then writes the lock from the venv.
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^defectops' > requirements.lock

mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

# optuna-dashboard on the tuning stages' storage (OPTUNA_STORAGE wins over params.yaml tune.storage)
optuna-ui: $(STAMP)
	$(BIN)/python -m defectops.optuna_ui --port 8080
