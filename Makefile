# The chat server needs only Python; these targets are for running, testing and measuring it.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
ADDRESS ?= 127.0.0.1
PORT ?= 8080
# The team's Autobahn|Testsuite runner (shared/, beside this checkout).
AUTOBAHN ?= ../shared/tools/autobahn/run

.PHONY: run test lint conformance soak bench bench-quick clean

run:
	$(PYTHON) server.py $(ADDRESS) $(PORT)

$(VENV)/ready: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements-dev.txt
	touch $@

test: $(VENV)/ready
	$(VPY) -m pytest -q

lint: $(VENV)/ready
	$(VPY) -m ruff check server.py websocket tests
	$(VPY) -m mypy server.py websocket

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Benchmarks against the Python peers (installed into bench/.venv by bench/run.py, never
# needed by the server). See docs/performance.md.
bench:
	$(PYTHON) bench/run.py

bench-quick:
	$(PYTHON) bench/run.py --quick
