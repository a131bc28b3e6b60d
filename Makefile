# One entry point for people and CI. `make demo` and `make test` set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test lint bench compare redis-server chromium

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

# The live recommender: streams, online learning and serving together, about 30 s of events
# (see examples/recommender/run.py --help for --source redis|kafka, --chaos, --json).
demo: setup
	$(PY) examples/recommender/run.py

lint: setup
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples
	$(VENV)/bin/mypy

# The control plane's Redis backend is tested against a real redis-server (started by the
# tests on free ports; no system service is started).
redis-server:
	command -v redis-server >/dev/null || (apt-get update -qq && RUNLEVEL=1 apt-get install -y -qq redis-server)

# The dashboard's end-to-end test drives Debian's chromium through playwright (which never
# downloads a browser of its own here).
chromium:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

test: lint redis-server chromium
	$(PY) -m pytest -q

bench: setup
	$(PY) -m rtml microbenchmark
