# The two commands: `make run` and `make test`. Everything else is a helper for them.
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup protos run test test-embedded lint migrate bench bench-quick

setup:
	@bash scripts/setup.sh

protos:
	@bash scripts/protos.sh

run: setup
	$(PY) -m services.suite run

test: setup
	$(PY) -m ruff check services tests tools
	bash scripts/test-backends.sh $(PY) -m pytest $(PYTEST_ARGS)

# Only the embedded backend (no PostgreSQL/Redis needed).
test-embedded: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(PY) -m ruff check services tests tools

# Production: apply every service's migrations to the databases named by the environment.
migrate: setup
	$(PY) -m services.membership migrate
	$(PY) -m services.points migrate

# Benchmarks against floors measured in the same run, on throwaway PostgreSQL and Redis (bench/).
# BENCH_ARGS: --quick (a few minutes), --selftest (each scenario about a second), --only reads,spend.
bench: setup
	bash scripts/test-backends.sh $(PY) -m bench $(BENCH_ARGS)

bench-quick:
	@$(MAKE) --no-print-directory bench BENCH_ARGS="--quick $(BENCH_ARGS)"
