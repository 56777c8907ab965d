# streamscale: `make all` is what a contributor runs before pushing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PYTEST_ARGS ?=

.PHONY: all install lint typecheck test bench chaos demo clean

all: lint test

# `python -m` run in the repository root puts the root first on sys.path, where operator/ would
# shadow the standard library's `operator` before anything else is imported: make the venv from /
# and call pip through its script.
$(BIN)/streamscale: pyproject.toml
	cd / && $(PYTHON) -m venv $(CURDIR)/$(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/streamscale ## create .venv with streamscale and its development tools

lint: install ## ruff, mypy --strict, import-linter
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(MAKE) typecheck
	cd .build/typecheck && PYTHONPATH=. ../../$(BIN)/lint-imports --config ../../pyproject.toml

# mypy and import-linter cannot follow the editable install's import hook that maps consumer/
# and operator/ to streamscale.consumer and streamscale.operator, so they read a tree of links
# with that layout.
typecheck: install
	rm -rf .build/typecheck && mkdir -p .build/typecheck/streamscale
	for f in streamscale/*; do ln -s "$$PWD/$$f" .build/typecheck/streamscale/; done
	ln -s "$$PWD/consumer" .build/typecheck/streamscale/consumer
	ln -s "$$PWD/operator" .build/typecheck/streamscale/operator
	cd .build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml -p streamscale

test: install ## the whole suite against throwaway redis-server and PostgreSQL processes
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install ## benchmarks, each printing a ratio against a baseline measured in the same run
	$(PY) bench/run.py

chaos: install ## the full chaos soak (1,000,000 messages); the short version runs in `make test`
	STREAMSCALE_CHAOS=full $(BIN)/pytest -m slow tests/system/test_chaos.py -s

demo: install ## the whole system on one machine, on embedded defaults
	$(BIN)/streamscale demo

clean:
	rm -rf .build .pytest_cache .mypy_cache .ruff_cache
