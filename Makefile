# Two commands on a fresh machine with Python 3.10+: `make serve` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS := test,server,s3,azure,gcs

.PHONY: serve test bench registry system-tools

$(BIN)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

## Serve the example app with gunicorn on 127.0.0.1:8000 over ./registry.
serve: $(BIN)/.installed
	MODEL_REGISTRY_ROOT=$${MODEL_REGISTRY_ROOT:-registry} $(BIN)/gunicorn -c example_app/gunicorn_conf.py 'example_app:create_app()'

## Debian tools the tests and benchmarks use: docker-compose (offline compose check) and wrk.
system-tools:
	@missing=""; for tool in docker-compose wrk chromium; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note: install$$missing (Debian packages) for the compose check and the load tests"; fi; \
	fi

## Lint, then run the whole test suite (the tests start every server they need on 127.0.0.1).
test: $(BIN)/.installed system-tools
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

## Run the benchmarks in bench/ (figures side by side with their baselines).
bench: $(BIN)/.installed
	for script in bench/[!_]*.py; do $(BIN)/python $$script || exit 1; done

## Rebuild the sample registry in ./registry.
registry: $(BIN)/.installed
	$(BIN)/python -m example_app.make_registry registry
