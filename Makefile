# `make test` and `make run` are all the set-up a fresh machine needs (Python >= 3.11).
# Every package comes from uv.lock: uv itself is installed by pip with the lock's hashes, then
# `uv sync --locked` installs exactly the lock (and fails if pyproject.toml and the lock disagree).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := UV_PROJECT_ENVIRONMENT=$(VENV) $(BIN)/uv
STAMP := $(VENV)/.installed
# Node tools the tests run (tests/node: server-everything, the MCP conformance suite, node 22), exactly
# as tests/node/package-lock.json pins them.
NODE_STAMP := tests/node/node_modules/.installed
CHROMIUM := /usr/bin/chromium
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: test run bench lint fmt lock clean

$(BIN)/uv: uv.lock scripts/uv_requirement.py
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PY) scripts/uv_requirement.py > $(VENV)/uv-requirement.txt
	$(BIN)/python -m pip install -q --disable-pip-version-check --require-hashes -r $(VENV)/uv-requirement.txt
	@touch $(BIN)/uv

$(STAMP): $(BIN)/uv pyproject.toml uv.lock $(NODE_STAMP)
	$(UV) sync --locked --extra test --quiet
	@touch $(STAMP)

$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

# Debian's Chromium, which the console's browser tests drive (tests/test_console_browser.py, Playwright with
# executable_path; `playwright install` downloads browsers of its own and is not used). Installed when
# missing if we are root (CI runs as root); otherwise say how, and those tests skip (never when CI=true).
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else echo "make: $(CHROMIUM) is missing: 'sudo apt-get install chromium' (the console's browser tests need it)"; fi

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest

run: $(STAMP)
	$(BIN)/opsgate serve --demo-tokens --host $(HOST) --port $(PORT)

bench: $(STAMP)
	$(BIN)/python bench/decide.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python -m bench.events
	$(BIN)/python bench/replay.py
	$(BIN)/python bench/upstream.py
	$(BIN)/python bench/console.py

lint: $(STAMP)
	$(BIN)/ruff check .

# Refresh uv.lock on purpose (after editing dependencies in pyproject.toml), then install it.
lock: $(BIN)/uv
	$(UV) lock
	$(UV) sync --locked --extra test --quiet
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info tests/node/node_modules
