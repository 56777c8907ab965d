# streamscale: `make all` is what a contributor runs before pushing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PYTEST_ARGS ?=

.PHONY: all install lint typecheck test bench chaos failover demo clean cluster-bins e2e demo-cluster

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

# Stops at once, with the one command to run, when redis-server, PostgreSQL, Prometheus or openssl
# is missing (helm is downloaded into .cache/ by the tests themselves).
test: ## the whole suite against throwaway redis-server and PostgreSQL processes
	.ci/prerequisites test
	$(MAKE) install
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install ## benchmarks, each printing a ratio against a baseline measured in the same run
	$(PY) bench/run.py

chaos: install ## the full chaos soak (1,000,000 messages); the short version runs in `make test`
	STREAMSCALE_CHAOS=full $(BIN)/pytest -m slow tests/system/test_chaos.py -s

failover: install ## Redis Cluster and Sentinel tests, the slow ones too (slot migration)
	$(BIN)/pytest -m 'slow or not slow' tests/system/test_cluster.py tests/system/test_sentinel.py -s

demo: ## the whole system on one machine, on embedded defaults (needs redis-server)
	.ci/prerequisites demo
	$(MAKE) install
	$(BIN)/streamscale demo

# etcd, kube-apiserver, kube-controller-manager, kubectl and helm built from the versions pinned in
# tools/k8s (Go module proxy), cached in ~/.cache/streamscale/k8s-<version>; reused once built.
cluster-bins: ## build (once) the local Kubernetes control plane of `make e2e`
	@start=$$(date +%s); tools/k8s/build.sh >/dev/null; \
	echo "cluster-bins: $$(( $$(date +%s) - start ))s"

e2e: install cluster-bins ## the e2e tests on a local control plane (real API server, helm, kubectl)
	$(BIN)/pytest -m e2e tests/e2e $(PYTEST_ARGS)

demo-cluster: install cluster-bins ## watch the chart, a StreamConsumer and its pods scale live
	$(BIN)/pytest -m demo tests/e2e/test_demo_cluster.py -s -q $(PYTEST_ARGS)

clean:
	rm -rf .build .pytest_cache .mypy_cache .ruff_cache
