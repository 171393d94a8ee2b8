# Wenming's one front door. `make demo` runs the demo district live; `make test` runs every test.
# Both install what they need: the virtualenv with pinned packages, the Kafka jars, PostgreSQL.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha1sum | cut -c1-10)
CLUSTER ?= 1
INSTANCES ?= 1
PYTEST_ARGS ?=

.PHONY: venv up down status demo test unit faults bench lint schemas

venv: $(STAMP)
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -r requirements.lock
	@$(PY) -m pip install -q --no-deps -e .
	@rm -f $(VENV)/.installed-* && touch $@

up:                ## start Kafka (KRaft) and PostgreSQL under .local/ (CLUSTER=3 for three brokers)
	@$(PYTHON) deploy/stack.py up --brokers $(CLUSTER)

down:              ## stop everything `up` started
	@$(PYTHON) deploy/stack.py down

status:            ## what runs, where its log is
	@$(PYTHON) deploy/stack.py status

demo: venv up      ## the demo district, live: services, a day of campaign events, where to look
	@$(PY) -m deploy.demo --instances $(INSTANCES)

test: venv         ## every test (the fixture starts the stack if it is down, and stops it after)
	@$(PY) -m pytest $(PYTEST_ARGS)

unit: venv         ## pure tests only, no broker or database
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

faults: venv       ## the fault suite alone (its own broker and database; prints the counts)
	@$(PY) -m pytest tests/faults -q -s $(PYTEST_ARGS)

bench: venv up     ## benchmarks beside the raw limits; writes bench/results/latest.json
	@$(PY) -m bench

lint: venv         ## ruff and mypy
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .
	@$(PY) -m mypy shared services bench deploy

schemas: venv      ## regenerate docs/events (JSON Schemas, AsyncAPI) from the pydantic models
	@$(PY) -m shared.events.schema write
