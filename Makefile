# tsarchive: local setup, services, demo and tests. Every target is idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export TSARCHIVE_PG_PORT ?= 55432
export TSARCHIVE_TSDB_PORT ?= 55433

.PHONY: setup services services-stop demo test package test-dates reliability lint bench bench-smoke tsdb-native clean

CHECKOV := .venv-checkov/bin/checkov

SPARK := .venv-spark/.installed

setup: $(STAMP) tools/node_modules/.installed $(CHECKOV) $(SPARK)
	@command -v initdb >/dev/null 2>&1 || test -x /usr/lib/postgresql/15/bin/initdb || $(MAKE) --no-print-directory postgres-apt
	@echo "setup done: $(BIN)/tsarchive"

postgres-apt:
	@if [ "$$(id -u)" = "0" ]; then \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null; \
	else \
	  echo "PostgreSQL 15 is missing: run 'sudo apt-get install -y postgresql-15' and re-run make setup" >&2; exit 1; \
	fi

$(STAMP): requirements.txt requirements-cli.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt -r requirements-cli.txt -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# checkov pins old dependencies (packaging<24), so it lives in its own venv.
$(CHECKOV):
	test -x .venv-checkov/bin/python || $(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install -q checkov==3.3.30

# The PySpark client needs pandas, which must stay out of .venv (docs/performance.md): the Spark reader test's own venv.
$(SPARK): requirements-spark.txt
	test -x .venv-spark/bin/python || $(PYTHON) -m venv .venv-spark
	.venv-spark/bin/pip install -q -r requirements-spark.txt
	touch $@

tools/node_modules/.installed: tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	touch $@

services: setup
	@bash tools/services.sh start

services-stop:
	@bash tools/services.sh stop

demo: services
	@bash tools/demo.sh

test: services
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# docs/reliability.md: every test marked @pytest.mark.scenario, run, with its measured outcome.
reliability: services
	TSARCHIVE_RELIABILITY_REPORT=docs/reliability.md $(BIN)/python -m pytest -q -m scenario

# The date-sensitive tests under an injected "now" spread over a year (tests hold on any date).
DATES ?= 2026-02-10T03:00:00+00:00 2026-07-19T18:45:00+00:00 2026-12-31T23:59:00+00:00
test-dates: services
	@for d in $(DATES); do echo "== TSARCHIVE_TEST_NOW=$$d"; \
	  TSARCHIVE_TEST_NOW=$$d $(BIN)/python -m pytest -q tests/test_timescale.py tests/test_partitions_pg.py \
	    tests/test_safety_pg.py tests/test_planning.py tests/test_delta_lake.py || exit 1; done

# The function app's packages built here for Linux (.python_packages), for `func azure functionapp publish <app> --no-build`.
package: $(STAMP)
	@bash tools/package.sh

# Native TimescaleDB for PostgreSQL 15, built from source (root, about 5 minutes, once); `make services` then starts it.
tsdb-native:
	@bash tools/timescaledb.sh

# The side-by-side benchmark (COPY, DuckDB, tsarchive local/Azurite/compact) on PostgreSQL 15 and native TimescaleDB,
# uncompressed and compressed chunks, 1M and 5M rows, 10,000 chunks, reader stall; then restore of one day against
# COPY BINARY in. About 30 minutes. Figures go to bench/results, bench/RESULTS.md (docs/performance.md explains them).
bench: tsdb-native services
	$(BIN)/python bench/bench_archive.py
	$(BIN)/python bench/bench_restore.py

bench-smoke: services
	$(BIN)/python bench/bench_archive.py --smoke

clean: services-stop
	rm -rf .local .venv-checkov .venv-spark
