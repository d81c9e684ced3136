# model_rollout — every target sets itself up on a fresh machine.
SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(PATH)
UV ?= $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
ARGS ?=

.PHONY: setup test test-loaded lint format bench demo demo-stop clean browser stress prometheus nginx mlserver

## setup: install uv if missing, then the locked environment (.venv)
setup: .venv/.synced

.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

## browser: Debian's chromium for the Rollouts page test (Playwright drives it; no browser download)
browser:
	@test -x /usr/bin/chromium || { (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

## stress: Debian's stress-ng, the CPU hog of `make test-loaded`
stress:
	@command -v stress-ng >/dev/null 2>&1 || { (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stress-ng >/dev/null; }

## prometheus: Debian's Prometheus server, scraping real servers in the metric-source tests
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

## nginx: Debian's nginx, the traffic router of the second serving stack (issue #13)
nginx:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null; }

## mlserver: MLServer in its own environment (it pins fastapi<0.116), from the hashed lock
mlserver: .venv-mlserver/.synced

.venv-mlserver/.synced: requirements/mlserver.txt | setup
	$(UV) venv -q --allow-existing -p 3.11 .venv-mlserver
	$(UV) pip sync -q --python .venv-mlserver/bin/python --require-hashes requirements/mlserver.txt
	@touch $@

## test: the whole suite (gateway, judge, DAGs, webhooks, UI) in two parallel groups, then the
## seconds per test file; with test paths in ARGS, just those. Fails when no test ran
test: setup browser prometheus nginx mlserver
	.venv/bin/python tests/run_groups.py $(ARGS)

## test-loaded: `make test` while `stress-ng --cpu 2` keeps both cores busy (issue #11)
test-loaded: setup browser prometheus nginx mlserver stress
	@stress-ng --cpu 2 --timeout 3h --quiet >/dev/null 2>&1 & hog=$$!; \
	trap 'kill -TERM $$hog 2>/dev/null; wait $$hog 2>/dev/null' EXIT; \
	echo "stress-ng --cpu 2 running in the background (pid $$hog; it stops its workers on TERM)"; \
	.venv/bin/python tests/run_groups.py $(ARGS)

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: setup
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

## bench: the benchmarks; each writes its table into docs/
bench: setup
	.venv/bin/python bench/judge_simulation.py
	.venv/bin/python bench/gateway_benchmark.py

## demo: MLflow (SQLite) + gateway + airflow standalone, two rollouts, a summary
demo: setup
	.venv/bin/python -m model_rollout.demo $(ARGS)

demo-stop: setup
	.venv/bin/python -m model_rollout.demo --stop

clean:
	rm -rf .demo .pytest_cache
