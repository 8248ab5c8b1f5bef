# Quick start (as root on Debian 12):  make demo   |   make test
PYTHON ?= python3
VENV   ?= .venv
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.iris-installed

.PHONY: all setup demo lint test test-unit bench clean

all: setup

setup: $(STAMP)
	@scripts/install-deps.sh

$(STAMP): pyproject.toml
	@scripts/install-deps.sh
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,report]'
	@touch $@

demo: setup
	$(VENV)/bin/iris demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

test: setup lint
	$(VENV)/bin/python -m pytest -q --durations=15 tests

test-unit: setup
	$(VENV)/bin/python -m pytest -q -m unit tests

bench: setup
	$(VENV)/bin/python bench/reservations.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
