# IDRL video platform: developer and CI entry points.
#
#   make up      install what is missing, then run the whole platform locally (Ctrl-C stops it)
#   make test    install what is missing, then run the whole test suite
#
# Works as root or as a user with sudo, on Debian 12 / Ubuntu with nothing but python3.
# Ports and other knobs are environment (or make) variables read by `python -m infra.local`:
#   GATEWAY_PORT=5050 AUTH_PORT=5051 API_PORT=5052 POSTGRES_PORT=5433 PUBSUB_PORT=8085
#   STORAGE_PORT=9023 PUBSUB_EMULATOR=auto|pstest|gcloud
#   TRANSCODER_WORKERS=1 GUNICORN_WORKERS=2 GUNICORN_THREADS=4
#   STACK_SERVICES=auth,api,transcoder,notifier (default: every service that exists)
#   STACK_STATE_DIR=.local (database cluster, stored objects, keys, logs)
#   DATABASE_URL / PUBSUB_EMULATOR_HOST / STORAGE_EMULATOR_HOST: use these instead of starting one
# e.g. `make up GATEWAY_PORT=8080 TRANSCODER_WORKERS=2` (make passes command-line variables on).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

VENV := .venv
PYTHON := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
LOCK := requirements.lock
# Stamp inside the virtualenv: a recreated virtualenv is reinstalled.
LOCK_STAMP := $(VENV)/.installed-$(LOCK)
SCAN_VENV := .venv-scan
SCAN_LOCK := requirements-scan.lock
SCAN_STAMP := $(SCAN_VENV)/.installed-$(SCAN_LOCK)
# uv installs both virtualenvs from their locks (on a clean clone pip took 165 s, uv 23 s
# with the virtualenvs and its own install: docs/benchmarks.md) and compiles the locks;
# pip installs uv itself.
UV_LOCK := requirements-uv.lock
UV_STAMP := $(VENV)/.installed-$(UV_LOCK)
UV := $(VENV)/bin/uv
UV_INSTALL := $(UV) pip install -q --no-deps --require-hashes
# The tus-js-client the resumable-upload tests drive with node (tests/js).
JS_DIR := tests/js
JS_STAMP := $(JS_DIR)/node_modules/.installed-package-lock.json
# fonts-dejavu-core and libfribidi0: the transcoder sets the cards' text in DejaVu Sans
# Bold, laid out right to left where the script is (docs/transcoder.md, "Cards from data").
APT_PACKAGES := python3-venv ffmpeg nginx postgresql golang-go golang-google-cloud-dev chromium \
	fonts-dejavu-core libfribidi0
# Node.js and npm come from Debian only where no node/npm is installed yet: a Node.js
# from another repository (e.g. NodeSource's, which carries its own npm) conflicts with
# Debian's npm package.
NODE_PACKAGES := nodejs npm
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# The web app (web/): npm packages from its lock file, then its build (served at /).
WEB_INSTALL_STAMP := web/node_modules/.installed-package-lock.json
WEB_BUILD_STAMP := web/dist/.built
WEB_SOURCES := $(shell find web/src -type f 2>/dev/null) web/index.html web/vite.config.js web/package-lock.json
PYTEST_ARGS ?=
BENCH_ARGS ?=
LOCK_ARGS ?=

.PHONY: help install system-packages pstest web up down test screenshots fmt lock migrate clean scan bench bench-api bench-e2e bench-webhooks bench-loudness bench-queue bench-fanout bench-cancel load

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

install: system-packages $(LOCK_STAMP) $(SCAN_STAMP) $(JS_STAMP) ## apt packages and the locked virtualenvs (quick when done)

system-packages:
	@missing=""; \
	for package in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$package" 2>/dev/null | grep -q "install ok installed" \
	    || missing="$$missing $$package"; \
	done; \
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then missing="$$missing $(NODE_PACKAGES)"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -q; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi

$(PYTHON):
	python3 -m venv $(VENV)

$(UV_STAMP): $(UV_LOCK) | $(PYTHON)
	$(PIP) install -q --disable-pip-version-check --no-deps --require-hashes -r $(UV_LOCK)
	touch $@

$(LOCK_STAMP): $(LOCK) $(UV_STAMP) | $(PYTHON)
	$(UV_INSTALL) --python $(PYTHON) -r $(LOCK)
	touch $@

$(JS_STAMP): $(JS_DIR)/package-lock.json | system-packages
	cd $(JS_DIR) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# checkov lives in its own virtualenv: its many pins never constrain the services'.
$(SCAN_VENV)/bin/python:
	python3 -m venv $(SCAN_VENV)

$(SCAN_STAMP): $(SCAN_LOCK) $(UV_STAMP) | $(SCAN_VENV)/bin/python
	$(UV_INSTALL) --python $(SCAN_VENV)/bin/python -r $(SCAN_LOCK)
	touch $@

pstest: install ## build the Pub/Sub fake (.local/bin/pstest) if its source changed
	$(PYTHON) -m infra.local build-pstest

# vite 8 needs Node.js 20.19 or newer: Debian 12's own nodejs (18) is too old, so node
# comes from the machine (NodeSource's nodejs package on the developers' images and CI).
$(WEB_INSTALL_STAMP): web/package-lock.json | system-packages
	@node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=19)?0:1)' \
	  || { echo "make web needs Node.js >= 20.19 with npm (see docs/webapp.md)" >&2; exit 1; }
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

web: $(WEB_BUILD_STAMP) ## build the web app into web/dist (quick when done)

$(WEB_BUILD_STAMP): $(WEB_INSTALL_STAMP) $(WEB_SOURCES)
	cd web && npm run --silent build
	touch $@

up: install pstest web ## run the platform: emulators, PostgreSQL, services, gateway on :5050
	$(PYTHON) -m infra.local up

down: ## stop a stack started in the background (`make up &`)
	@if [ -x $(PYTHON) ]; then $(PYTHON) -m infra.local down; else echo "nothing to stop"; fi

# The suite runs in TEST_WORKERS processes (pytest-xdist), each test file whole in one of
# them, so its module's stack is started once; TEST_WORKERS=0 runs it in this process.
# Three on two cores: most drills wait on processes, not CPU (docs/benchmarks.md).
TEST_WORKERS ?= 3

test: install pstest web ## the whole test suite (PYTEST_ARGS="-k auth" to narrow it)
	@status=0; $(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then echo "FAILED: pytest collected no tests (exit status 5)" >&2; fi; \
	exit $$status

screenshots: install pstest web ## photograph the web app's pages into docs/screenshots (its browser tests)
	WEB_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots $(VENV)/bin/pytest tests/web -q

fmt: $(LOCK_STAMP) ## apply the formatter and ruff's fixable rules
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

migrate: install ## migrate the local stack's database (DATABASE_URL, or the one `make up` runs)
	$(PYTHON) -m infra.local migrate

# Existing pins are kept unless LOCK_ARGS=--upgrade; the images' runtime lock is
# constrained by the main lock, so both always agree on every version they share.
lock: $(UV_STAMP) ## re-resolve pyproject.toml into the hash-pinned lock files
	$(UV) pip compile pyproject.toml --extra test --generate-hashes --python-version 3.11 $(LOCK_ARGS) -o $(LOCK) -q
	$(UV) pip compile pyproject.toml --generate-hashes --python-version 3.11 -c $(LOCK) -o requirements-runtime.lock -q
	$(UV) pip compile requirements-scan.in --generate-hashes --python-version 3.11 $(LOCK_ARGS) -o $(SCAN_LOCK) -q
	$(UV) pip compile requirements-uv.in --generate-hashes --python-version 3.11 $(LOCK_ARGS) -o $(UV_LOCK) -q

clean: ## delete local state: database cluster, stored objects, keys, logs, builds
	@if [ -x $(PYTHON) ]; then $(PYTHON) -m infra.local clean; else rm -rf .local; fi
	rm -rf .pytest_cache

scan: install ## checkov over infra/terraform and the four Dockerfiles
	$(SCAN_VENV)/bin/checkov --skip-download --compact --quiet --framework terraform -d infra/terraform
	$(SCAN_VENV)/bin/checkov --skip-download --compact --quiet --framework dockerfile \
	  -f services/auth/Dockerfile -f services/api/Dockerfile \
	  -f services/transcoder/Dockerfile -f services/notifier/Dockerfile \
	  -f services/dispatcher/Dockerfile

# --- benchmarks and load tests (figures printed, and recorded in docs/) ------------------

bench: install pstest ## the transcoder pipeline against its reference bound, the worker's memory, and what each clip option costs
	@status=0; $(PYTHON) benchmarks/transcoder_bench.py || status=$$?; \
	$(PYTHON) benchmarks/options_bench.py || status=$$?; exit $$status

bench-api: install pstest ## upload memory and task-list latency of the api
	$(PYTHON) benchmarks/api_bench.py

bench-e2e: install pstest ## POST to processed through the whole stack; tasks per minute (BENCH_ARGS="--only-progressive --rounds 3")
	$(PYTHON) benchmarks/e2e_bench.py $(BENCH_ARGS)

bench-webhooks: install pstest ## status change to webhook received (p50, p95); deliveries per second
	$(PYTHON) benchmarks/webhooks_bench.py

bench-loudness: install ## what two-pass loudness normalization adds to a clip (CPU and wall)
	$(PYTHON) benchmarks/loudness_bench.py

bench-queue: install pstest ## the place-in-line ETAs of 20 tasks against when they were processed
	$(PYTHON) benchmarks/queue_eta_bench.py

bench-fanout: install ## the split into per-part segments, each part at one thread, and 1 to 16 workers
	$(PYTHON) benchmarks/fanout_bench.py

bench-cancel: install pstest ## a cancel of a task made across two workers: every part's ffmpeg stopped, objects left
	$(PYTHON) benchmarks/cancel_bench.py

load: install pstest ## Locust against a fresh local stack through the gateway; writes docs/load.md
	$(PYTHON) benchmarks/load.py
