# Every target installs what it needs into .venv first, so each works on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint typecheck all clean bench promtool browser fuzz

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed (set PYTHON=...)")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/python -m collector

# promtool (Debian's `prometheus` package) checks the /metrics scrape, the alert rules and their unit tests in
# `make test`; those tests skip with a message without it. Installed when missing and running as root. Only the
# binary is needed: where the install started the daemon (a machine with systemd), it is stopped and disabled again.
promtool:
	@command -v promtool >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus \
	    && { ! command -v systemctl >/dev/null || systemctl disable --now prometheus 2>/dev/null || true; }; \
	  else echo "promtool not found: apt-get install prometheus (its tests will be skipped)"; fi; }

test: install promtool browser
	$(BIN)/python -m pytest

# The browser test drives the system Chromium (Debian packages, never a browser download). Installed here when
# missing and running as root; elsewhere (or if apt fails) that one test skips with a message saying so.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    { apt-get update && apt-get install -y chromium chromium-driver; } || echo "*** installing chromium failed: the browser test will skip"; \
	  else echo "*** /usr/bin/chromium missing (apt-get install chromium chromium-driver): the browser test will skip"; fi; }

# schemathesis against a live collector under uvicorn, FUZZ_EXAMPLES (default 300) per operation and phase;
# `make test` runs the same with 5. FUZZ_SEED varies the run.
fuzz: install
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-300} $(BIN)/python -m pytest tests/test_fuzz.py -v -s

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

# The hostile-internet suite, long variants: floods, huge and crafted inputs, idle sockets; prints the figures
# (FIGURE lines). The fast variants run in `make test`. See docs/security.md.
.PHONY: hostile
hostile: install
	HOSTILE_LONG=1 $(BIN)/python -m pytest tests/security -v -s

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
