# Every target installs what it needs into .venv first, so each works on a fresh machine with Python 3.11+:
# `make run` the runtime and the embedded PostgreSQL only; `make test`, `lint` and `typecheck` add the test toolchain.
# Both install exact versions from the locks in requirements/ (hash-checked), never what PyPI has newest that day;
# pyproject.toml keeps compatible ranges for those who install the package as a library. `make lock` refreshes them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.installed-runtime
DEV := $(VENV)/.installed-dev
PIP := $(BIN)/python -m pip install --disable-pip-version-check --progress-bar off

# The locks, each made from pyproject.toml by `make lock`:
#   IMAGE_LOCK the package's own dependencies, for the image (deploy/Dockerfile) and the SBOM: Linux, LOCK_PYTHON
#   RUN_LOCK   the same plus the embedded PostgreSQL (extra `embedded`), for `make run`: any platform, Python 3.11+
#   DEV_LOCK   the same plus the test toolchain (extras `embedded,dev`), for test, lint, typecheck and CI
# The image's and make run's versions are constrained by DEV_LOCK's: what ships is what the tests ran.
IMAGE_LOCK := requirements/runtime.txt
RUN_LOCK := requirements/run.txt
DEV_LOCK := requirements/dev.txt
LOCK_PYTHON := 3.11
UV_VERSION := 0.13.9
SBOM ?= build/sbom.cdx.json

.PHONY: install install-dev check-python run test lint typecheck all clean bench promtool browser fuzz lock sbom browser-sdks

install: $(RUNTIME)
install-dev: $(DEV)

# Checked on every run: a Python older than 3.11, or an existing .venv of another Python than an explicit PYTHON=
# asks for (it would otherwise be used silently).
check-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed: $(PYTHON) is " + sys.version.split()[0] + " (set PYTHON=...)")'
ifneq ($(filter environment command line,$(origin PYTHON)),)
	@if [ -x $(BIN)/python ]; then \
	  want=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  have=$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  if [ "$$want" != "$$have" ]; then \
	    echo "$(VENV) was made with Python $$have, but PYTHON=$(PYTHON) is Python $$want:"; \
	    echo "remove it (rm -rf $(VENV)) to rebuild it with $(PYTHON), or leave PYTHON unset to keep using it."; \
	    exit 1; \
	  fi; \
	fi
endif

$(BIN)/python: | check-python
	@echo "Creating $(VENV) with $$($(PYTHON) --version)"
	@$(PYTHON) -m venv $(VENV)

# The stamps depend on the locks: a changed lock (a pull, `make lock`) reinstalls at the next make. The project itself
# goes in editable and without dependencies: every dependency comes from the lock, at its pinned version and hash.
$(RUNTIME): pyproject.toml $(RUN_LOCK) | $(BIN)/python
	@echo "Installing the collector's runtime (starlette, uvicorn, asyncpg, aiohttp, aioboto3, orjson, ...) and the"
	@echo "embedded PostgreSQL (pgserver) into $(VENV) from $(RUN_LOCK); the test toolchain comes with \`make test\`."
	$(PIP) --require-hashes -r $(RUN_LOCK)
	$(PIP) --no-deps -e .
	@touch $@

$(DEV): $(RUNTIME) $(DEV_LOCK)
	@echo "Installing the test toolchain (pytest, ruff, mypy, moto, duckdb, playwright, schemathesis, ...) into $(VENV)"
	@echo "from $(DEV_LOCK)"
	$(PIP) --require-hashes -r $(DEV_LOCK)
	@touch $@

# Re-resolves the three locks from pyproject.toml alone (with uv, installed into .venv at UV_VERSION): after a change
# to pyproject's dependencies, or a merge that touched them. Versions already locked are kept where pyproject still
# allows them; `make lock UPGRADE=1` takes the newest releases that pyproject allows instead. Run `make test` after,
# and commit requirements/ with the change. DEV_LOCK is resolved first: the other two are its subsets, pinned alike
# (the image's with the parquet extra, make run's without it).
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --python-version $(LOCK_PYTHON) \
	--custom-compile-command 'make lock' $(if $(UPGRADE),--upgrade)
lock: check-python | $(BIN)/python
	$(PIP) --quiet 'uv==$(UV_VERSION)'
	$(UV_COMPILE) --universal --extra embedded --extra dev -o $(DEV_LOCK)
	$(UV_COMPILE) --universal --extra embedded -c $(DEV_LOCK) -o $(RUN_LOCK)
	$(UV_COMPILE) --python-platform linux --extra parquet --extra iceberg -c $(DEV_LOCK) -o $(IMAGE_LOCK)

# A CycloneDX SBOM (JSON) of the image's Python packages, from IMAGE_LOCK alone: offline, nothing installed or
# downloaded for it. The root component (name, version) comes from pyproject.toml. A requirements file carries no
# dependency graph, which cyclonedx-py warns about on every run: that warning is silenced, nothing else.
sbom: check-python install-dev
	@mkdir -p $(dir $(SBOM))
	$(BIN)/python -W 'ignore:The Component this BOM is describing' -m cyclonedx_py requirements \
	  --pyproject pyproject.toml --output-reproducible --output-format JSON -o $(SBOM) $(IMAGE_LOCK)
	@echo "SBOM of $(IMAGE_LOCK): $(SBOM)"

run: check-python install
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

# With coverage of collector/ and pipeline/; fails under the floor in pyproject.toml ([tool.coverage.report]).
test: check-python install-dev promtool browser browser-sdks
	$(BIN)/python -m pytest --cov --cov-report=term

# The browser test drives the system Chromium (Debian packages, never a browser download). Installed here when
# missing and running as root; elsewhere (or if apt fails) that one test skips with a message saying so.
browser:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    { apt-get update && apt-get install -y chromium chromium-driver; } || echo "*** installing chromium failed: the browser test will skip"; \
	  else echo "*** /usr/bin/chromium missing (apt-get install chromium chromium-driver): the browser test will skip"; fi; }

# The vendors' browser SDKs (Segment, Snowplow, Plausible) for tests/system/test_protocol_browsers.py: installed from
# the npm registry at the versions package-lock.json pins (npm ci) and bundled into one script by esbuild. Without
# npm, that test skips with a message saying so.
browser-sdks:
	@if command -v npm >/dev/null; then \
	  cd tests/system/browser_sdks && npm ci --no-audit --no-fund --loglevel=error \
	  && node_modules/.bin/esbuild entry.js --bundle --format=iife --outfile=dist/sdks.js --log-level=warning \
	  || echo "*** building the browser SDK bundle failed: its test will skip"; \
	else echo "*** npm missing (apt-get install npm): the browser SDK test will skip"; fi

# schemathesis against a live collector under uvicorn, FUZZ_EXAMPLES (default 300) per operation and phase;
# `make test` runs the same with 5. FUZZ_SEED varies the run.
fuzz: check-python install-dev
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-300} $(BIN)/python -m pytest tests/system/test_fuzz.py -v -s

lint: check-python install-dev
	$(BIN)/ruff check collector pipeline tests
	$(BIN)/ruff format --check collector pipeline tests

typecheck: check-python install-dev
	$(BIN)/mypy

all: lint typecheck test

# Throughput, latency, CPU and memory of the collector against a bare Starlette ceiling, under wrk; fails when an
# acknowledged event is not stored. BENCH_DURATION, BENCH_SCENARIOS, BENCH_RUNS, BENCH_OUTPUT: see deploy/bench/README.md.
bench: check-python install-dev
	@command -v wrk || { if [ "$$(id -u)" = 0 ]; then apt-get update && apt-get install -y wrk; else echo "install wrk (apt-get install wrk)"; exit 1; fi; }
	$(BIN)/python deploy/bench/bench.py

# Fault injection, long variants: SIGKILLs, PostgreSQL restarts, outages and hangs under load; prints the figures.
# (The fast variants run in `make test`.)
.PHONY: faults
faults: check-python install-dev
	FAULTS_LONG=1 $(BIN)/python -m pytest -m faults tests/system/faults -v -s

# The hostile-internet suite, long variants: floods, huge and crafted inputs, idle sockets; prints the figures
# (FIGURE lines). The fast variants run in `make test`. See docs/security.md.
.PHONY: hostile
hostile: check-python install-dev
	HOSTILE_LONG=1 $(BIN)/python -m pytest tests/security -v -s

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache build
