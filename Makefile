# Every target installs what it needs into .venv first, so each works on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck all clean bench promtool

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/python -m collector

test: install promtool
	$(BIN)/python -m pytest

# promtool (Debian's `prometheus` package) checks the /metrics scrape, the alert rules and their unit tests in
# `make test`; those tests skip with a message without it. Installed when missing and running as root. Only the
# binary is needed: where the install started the daemon (a machine with systemd), it is stopped and disabled again.
promtool:
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
	    && { ! command -v systemctl >/dev/null || systemctl disable --now prometheus 2>/dev/null || true; }; \
	  else echo "promtool not found: apt-get install prometheus (its tests will be skipped)"; fi; }

lint: install
	$(BIN)/ruff check collector pipeline tests
	$(BIN)/ruff format --check collector pipeline tests

typecheck: install
	$(BIN)/mypy

all: lint typecheck test

# Throughput, latency, CPU and memory of the collector against a bare Starlette ceiling, under wrk; fails when an
# acknowledged event is not stored. BENCH_DURATION, BENCH_SCENARIOS, BENCH_RUNS, BENCH_OUTPUT: see deploy/bench/README.md.
bench: install
	@command -v wrk || { if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y wrk; else echo "install wrk (apt-get install wrk)"; exit 1; fi; }
	$(BIN)/python deploy/bench/bench.py

# Fault injection, long variants: SIGKILLs, PostgreSQL restarts, outages and hangs under load; prints the figures.
# (The fast variants run in `make test`.)
.PHONY: faults
faults: install
	FAULTS_LONG=1 $(BIN)/python -m pytest -m faults tests/faults -v -s

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
