# DPP — the two set-up commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
# The first Python 3.12 that really runs: $PYTHON, python3.12 on PATH, then pyenv's or a system install.
PYTHON_CANDIDATES := $(PYTHON) python3.12 $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python3.12) \
	$(wildcard /usr/local/bin/python3.12 /usr/bin/python3.12 /opt/homebrew/bin/python3.12)
FIND_PYTHON := for py in $(PYTHON_CANDIDATES); do \
	"$$py" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' >/dev/null 2>&1 && { echo "$$py"; break; }; done

.PHONY: help run test lint format bench clean

help:
	@echo "make run    - install, migrate, seed a demo tenant, start API + worker + beat (embedded mode)"
	@echo "make test   - install and run the whole suite against PostgreSQL and Redis"
	@echo "make lint   - ruff check, ruff format --check, mypy"

$(BIN)/python:
	@py="$$($(FIND_PYTHON))"; \
	if [ -z "$$py" ]; then echo "make: Python 3.12 is required: install it (e.g. 'pyenv install 3.12') or set PYTHON=/path/to/python3.12"; exit 1; fi; \
	echo "creating $(VENV) with $$py"; "$$py" -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip

$(VENV)/.installed-run: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	@$(BIN)/python manage.py migrate --noinput -v0
	@$(BIN)/python manage.py collectstatic --noinput -v0
	@$(BIN)/python manage.py seed_demo
	@rm -rf var/prometheus && mkdir -p var/prometheus
	@PATH="$(CURDIR)/$(BIN):$$PATH" PROMETHEUS_MULTIPROC_DIR="$(CURDIR)/var/prometheus" \
		exec $(BIN)/honcho start -f Procfile

test: $(VENV)/.installed-dev
	@$(BIN)/python tests/run.py $(ARGS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
