# ecg-monitor task runner. CI calls these same targets (.ci/run), so a local run equals a CI run.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
ECG_DATA_DIR ?= ../shared/data
export ECG_DATA_DIR

.PHONY: help venv up dashboard test test-fast test-integration check-deploy lint typecheck bench eval-qrs eval-dropouts clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/ecg-monitor: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[train,eval,dev]"
	@touch $@

venv: $(BIN)/ecg-monitor  ## create .venv and install ecg-monitor with all extras

up: venv  ## main job: embedded broker + worker + replay of MIT-BIH records, alerts printed (Ctrl-C stops)
	$(BIN)/ecg-monitor up $(ARGS)

dashboard: venv  ## 12-lead anomaly dashboard on http://127.0.0.1:8050/ (upload .npy or WFDB, see score, attention, error)
	$(BIN)/ecg-monitor dashboard $(ARGS)

test: venv  ## the whole test suite (unit + integration on the embedded broker)
	$(BIN)/python -m pytest -q $(ARGS)

test-fast: venv  ## unit tests without the slow ones (model training, long real-data evaluations): < 1 min
	$(BIN)/python -m pytest -q -m "not integration and not slow" $(ARGS)

test-integration: venv  ## integration tests only (embedded broker, worker subprocesses, Prometheus)
	$(BIN)/python -m pytest -q -m integration $(ARGS)

check-deploy: venv  ## deploy/ without Docker: promtool, amtool, hadolint, compose schema + structure (tests/unit/test_deploy.py)
	promtool check config deploy/prometheus.yml
	promtool check rules deploy/alert-rules.yml
	promtool test rules deploy/rules-tests/*.yml
	promtool check config deploy/prometheus.compose.yml
	amtool check-config deploy/alertmanager.yml
	$(BIN)/hadolint deploy/Dockerfile
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit/test_deploy.py

lint: venv  ## ruff (lint and format check) and import-linter (layering: training > simulators > stream > models)
	$(BIN)/ruff check stream simulators models training tests
	$(BIN)/ruff format --check stream simulators models training tests
	$(BIN)/lint-imports

typecheck: venv  ## mypy
	$(BIN)/mypy

bench: venv  ## throughput/latency benchmark on the local stack (ARGS="--workers 2" to scale out)
	$(BIN)/ecg-monitor bench --patients 500 --json $(ARGS)

eval-qrs: venv  ## R-peak detector vs XQRS/GQRS/NeuroKit2 on all 48 MIT-BIH records
	$(BIN)/python -m training evaluate qrs --db mitdb --json

eval-dropouts: venv  ## dropout detection vs injected ground truth
	$(BIN)/python -m training evaluate dropouts --json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
