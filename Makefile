# agentmesh — the verbs. `make run` and `make test` work on a fresh clone: each
# installs what it needs into .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: setup run test lint format proto proto-check proto-breaking pytest browser k8s-check images push \
        bench loadtest loadtest-stress soak profile eval eval-golden clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -U pip
	# The CPU build of torch first (this machine keeps it on disk); an unpinned torch pulled
	# in by the semantic extra would download a multi-GB CUDA build.
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,semantic]'
	@rm -f $(VENV)/.installed-* && touch $@

# Debian packages the tests drive: headless Chromium for the chat page (Playwright), a
# Prometheus server (and promtool) that scrapes the locally run manifests.
browser:
	@command -v chromium >/dev/null && command -v prometheus >/dev/null || { \
		apt-get update -qq && apt-get install -y -qq chromium prometheus >/dev/null; }

# checkov pins its own dependency versions, so it lives in a venv of its own.
TOOLS := .venv-tools
$(TOOLS)/bin/checkov:
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q --disable-pip-version-check checkov

# Renders both overlays, validates every object against the Kubernetes schemas, runs
# checkov, and cross-checks commands, ports, probes, env vars and NetworkPolicies with the code.
# Also runs `promtool test rules` on the alerts (promtool comes with `make browser`).
k8s-check: setup browser $(TOOLS)/bin/checkov
	$(BIN)/python scripts/k8s_check.py

IMAGE_TAG := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE := ghcr.io/agentmesh/agentmesh:$(IMAGE_TAG)
# One image for every service (the Deployment picks the command); the overlays use this tag.
# The base image is pinned by digest: PYTHON_DIGEST=sha256:... (see Dockerfile).
images:
	@test -n "$(PYTHON_DIGEST)" || { echo "images-refuse-unset-digest: set PYTHON_DIGEST=sha256:... (Dockerfile says how)"; exit 1; }
	docker build --build-arg PYTHON_DIGEST=$(PYTHON_DIGEST) -t $(IMAGE) .

# `make push REGISTRY=registry.example.com/agentmesh`: tags and pushes the image there, and
# refuses to overwrite a released tag (the manifests pull IfNotPresent). Point the cluster
# at it with k8s/components/registry.
push: images
	@test -n "$(REGISTRY)" || { echo "set REGISTRY=<registry>/<path>"; exit 1; }
	@! docker manifest inspect $(REGISTRY)/agentmesh:$(IMAGE_TAG) >/dev/null 2>&1 \
		|| { echo "$(REGISTRY)/agentmesh:$(IMAGE_TAG) exists: release tags are immutable, bump the version"; exit 1; }
	docker tag $(IMAGE) $(REGISTRY)/agentmesh:$(IMAGE_TAG)
	docker push $(REGISTRY)/agentmesh:$(IMAGE_TAG)

# MESH_ARGS=--ephemeral-ports runs beside another mesh (or whatever holds 8080, 50051-50055, ...).
MESH_ARGS ?=
run: setup
	$(BIN)/python -m meshctl run $(MESH_ARGS)

test: setup browser lint proto-check k8s-check pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/buf lint

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

proto: setup
	$(BIN)/python scripts/gen_protos.py

# Run on a branch before merging a proto change: no breaking change against main's contracts.
proto-breaking: setup
	$(BIN)/buf breaking --against '.git#branch=main'

proto-check: setup
	$(BIN)/python scripts/gen_protos.py --check
	$(BIN)/python scripts/gen_env_example.py --check

pytest: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# Grade recorded traces with the judge; needs an admin: EVALS_ADMIN_EMAIL/EVALS_ADMIN_PASSWORD
# or EVAL_ARGS="--token ...". Exits 2 when a metric crosses its threshold.
eval: setup
	$(BIN)/python -m services.evals run $(EVAL_ARGS)

# The golden dataset through a fresh mesh and the real agent; fails when quality regresses.
eval-golden: setup
	$(BIN)/python scripts/eval_golden.py

LOADTEST_USERS ?= 20
LOADTEST_SPAWN_RATE ?= 5
LOADTEST_TIME ?= 60s
LOADTEST_HOST ?=
STRESS_USERS ?= 1500
SOAK_MINUTES ?= 10
PROFILE_SECONDS ?= 30
BENCH_QUICK ?=

# The mesh's own cost against an LLM of known latency; prints a table, writes bench/results/.
bench: setup
	BENCH_QUICK=$(BENCH_QUICK) $(BIN)/python -m bench
	$(BIN)/python -m bench.evals_grading
	$(BIN)/python -m bench.auth_throughput

# Locust, headless and bounded, against `make run`'s gateway (or a mesh it starts); fails on missed SLOs.
loadtest: setup
	$(BIN)/python -m loadtest.run --users $(LOADTEST_USERS) --spawn-rate $(LOADTEST_SPAWN_RATE) \
		--time $(LOADTEST_TIME) $(if $(LOADTEST_HOST),--host $(LOADTEST_HOST))

# The seed's stress test: STRESS_USERS concurrent users doing login -> create session -> chat.
loadtest-stress: setup
	$(BIN)/python -m loadtest.stress --users $(STRESS_USERS)

# Steady load for SOAK_MINUTES; fails when memory, threads or connections keep growing.
soak: setup
	SOAK_MINUTES=$(SOAK_MINUTES) $(BIN)/python -m bench.soak

# py-spy profiles of every process under a chat load and a GetMe load (bench/results/profile-*).
profile: setup
	PROFILE_SECONDS=$(PROFILE_SECONDS) $(BIN)/python -m bench.profile
	PROFILE_SECONDS=$(PROFILE_SECONDS) PROFILE_WORKLOAD=getme PROFILE_CONCURRENCY=64 $(BIN)/python -m bench.profile

clean:
	rm -rf .data .pytest_cache .ruff_cache
