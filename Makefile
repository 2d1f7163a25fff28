# The two commands: `make run` and `make test`. Everything else is a helper for them.
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup protos run test test-embedded lint migrate bench bench-quick seed-bench

setup:
	@bash scripts/setup.sh

protos:
	@bash scripts/protos.sh

run: setup
	$(PY) -m services.suite run

test: setup
	bash scripts/lint.sh
	bash scripts/test-backends.sh $(PY) -m pytest $(PYTEST_ARGS)

# Only the embedded backend (no PostgreSQL/Redis needed).
test-embedded: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# ruff, buf lint, and buf breaking against the last released protos (protos/RELEASED).
lint: setup
	bash scripts/lint.sh

# Production: apply the migrations of every service in services/registry.py to the databases
# named by the environment.
migrate: setup
	$(PY) -m services migrate

# Benchmarks against floors measured in the same run, on throwaway PostgreSQL and Redis (bench/).
# BENCH_ARGS: --quick (a few minutes), --selftest (each scenario about a second), --only reads,spend.
bench: setup
	bash scripts/test-backends.sh $(PY) -m bench $(BENCH_ARGS)

bench-quick:
	@$(MAKE) --no-print-directory bench BENCH_ARGS="--quick $(BENCH_ARGS)"

# A synthetic shop of MEMBERS members (default 1,000,000) in segments' configured database
# (LOYALTY_SEGMENTS_DB_URL, else data/segments.db), for measuring segments at scale.
MEMBERS ?= 1000000
SHOP ?= bench-shop
seed-bench: setup
	$(PY) -m services.segments seed-bench --members $(MEMBERS) --shop $(SHOP)
