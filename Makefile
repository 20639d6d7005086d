# The two commands a newcomer needs: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-stress lint format install install-dev clean bench docs docs-serve

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when a requirements file changed.
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.installed $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## make run: web + worker (+ a private Redis if none answers) on SQLite with console email.
run: install
	./scripts/run.sh

## make test: lint and the docs, then the whole suite against PostgreSQL, Redis and RabbitMQ
## (scripts/test.sh starts those installed but not running, and names those missing).
test: install-dev lint
	./scripts/test.sh

## make test-stress: the same suite beside two busy loops pinned to the CPUs (a busy CI machine).
test-stress: install-dev
	./scripts/stress.sh

## make bench: the pipeline benchmark (python -m bench; BENCH_ARGS=--quick for a short run).
bench: install-dev
	$(BIN)/python -m bench $(BENCH_ARGS)

## make docs: the docs site (MkDocs, strict: a broken link or anchor fails) into site/.
docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict  # not --quiet: it hides the warnings strict counts

## make docs-serve: the docs site on http://127.0.0.1:8001, rebuilt as you edit.
docs-serve: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

lint: install-dev docs
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy users tasks bankproject
	PYTHON=$(BIN)/python ./scripts/check_compose.sh

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .run .pytest_cache .ruff_cache staticfiles site
