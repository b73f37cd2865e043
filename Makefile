# Two commands on a fresh machine with Python 3.10+: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# `serve` installs the runtime and the server only; `test` adds the tools and every storage backend.
SERVE_EXTRAS := server,metrics
TEST_EXTRAS := test,server,s3,azure,gcs
# Debian packages the tests and benchmarks use, as command:package (apt-get installs them as root).
SYSTEM_TOOLS := docker-compose:docker-compose wrk:wrk node:nodejs npm:npm chromium:chromium

.PHONY: serve test bench registry system-tools

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/.installed-serve: setup.cfg pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[$(SERVE_EXTRAS)]'
	touch $@

$(BIN)/.installed: setup.cfg pyproject.toml | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(TEST_EXTRAS)]'
	touch $@

## Serve the example app with gunicorn on 127.0.0.1:8000 over ./registry, loading only versions
## signed by a trusted key: by default the DEMO key that signed the sample (never trust it in
## production). Serving your own registry: set MODEL_REGISTRY_TRUSTED_KEYS (empty: no signatures).
DEMO_TRUSTED_KEY := example_app/keys/demo-only.pub
serve: $(BIN)/.installed-serve
	MODEL_REGISTRY_ROOT=$${MODEL_REGISTRY_ROOT:-registry} \
	MODEL_REGISTRY_TRUSTED_KEYS=$${MODEL_REGISTRY_TRUSTED_KEYS-$(DEMO_TRUSTED_KEY)} \
	$(BIN)/gunicorn -c example_app/gunicorn_conf.py 'example_app:create_app()'

## Install the missing SYSTEM_TOOLS with apt-get when root on Debian; otherwise say what to install.
system-tools:
	@missing=""; for tool in $(SYSTEM_TOOLS); do \
	  command -v $${tool%%:*} >/dev/null || missing="$$missing $${tool#*:}"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "system-tools: apt-get install$$missing"; \
	  log=$$( (apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $$missing) 2>&1) \
	    || { echo "$$log"; exit 1; }; \
	else echo "system-tools: not root on Debian; install$$missing yourself (see README, Development)"; fi

## Lint, then run the whole test suite (the tests start every server they need on 127.0.0.1), one
## pytest-xdist worker per core, each test file in one worker (each worker starts its own servers).
PYTEST_ARGS ?= -n auto --dist loadfile
test: $(BIN)/.installed system-tools
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

## Run the benchmarks in bench/ (figures side by side with their baselines).
bench: $(BIN)/.installed
	for script in bench/[!_]*.py; do $(BIN)/python $$script || exit 1; done

## Rebuild the sample registry in ./registry (needs only what `make serve` installs).
registry: $(BIN)/.installed-serve
	$(BIN)/python -m example_app.make_registry registry
