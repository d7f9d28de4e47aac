# Summit ops platform. `make demo` and `make test` are the only set-up commands needed.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STATE  ?= $(or $(OPS_PLATFORM_HOME),$(CURDIR)/.ops_platform)
export OPS_PLATFORM_WAREHOUSE ?= $(STATE)/warehouse.duckdb

.PHONY: demo test dev lint bench dbt-manifest clean help

help:
	@echo "make demo   - install, generate the demo world, run the whole platform, print where to look"
	@echo "make test   - install and run the full test suite"
	@echo "make dev    - open the Dagster UI on the platform (after make demo)"
	@echo "make lint   - ruff"
	@echo "make bench  - world generation and ingestion benchmarks (slow; see BENCHMARKS.md)"

$(BIN)/ops-platform: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

# The dbt manifest is always prepared from the current project, never committed.
dbt-manifest: $(BIN)/ops-platform
	cd dbt_project && ../$(BIN)/dbt parse --profiles-dir . --quiet

DEMO_ARGS ?=  # e.g. make demo DEMO_ARGS=--fresh (a new world; see ops-platform demo --help)
demo: dbt-manifest
	$(BIN)/ops-platform demo $(DEMO_ARGS)

test: dbt-manifest
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

dev: dbt-manifest
	@$(BIN)/python -c "import sys, pathlib; from sensors.runner import prepare_dagster_home; [print('warning:', n) for n in prepare_dagster_home(pathlib.Path(sys.argv[1]))]" $(STATE)/dagster_home
	DAGSTER_HOME=$(STATE)/dagster_home $(BIN)/dagster dev -w workspace.yaml

lint: $(BIN)/ops-platform
	$(BIN)/ruff check .

bench: dbt-manifest
	$(BIN)/python benchmarks/bench_world.py S M L
	$(BIN)/python benchmarks/bench_ingest.py --preset M
	$(BIN)/python benchmarks/bench_demo.py
	$(BIN)/python benchmarks/bench_receipts.py --n 20000 --batch 2000
	$(BIN)/python benchmarks/bench_policy.py
	$(BIN)/python benchmarks/bench_burn.py --preset L
	$(BIN)/ops-platform world generate --preset M --out $(STATE)/bench/world-M
	$(BIN)/python benchmarks/bench_finops.py --world $(STATE)/bench/world-M

clean:
	rm -rf dbt_project/target dbt_project/logs .pytest_cache .ruff_cache
