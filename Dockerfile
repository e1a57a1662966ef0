# One image for every agentmesh process; the manifests pick the process by its command
# (`python -m services.auth`, `python -m gateway`, ...). Built by `make images`.
ARG PYTHON_VERSION=3.11
# The base image by digest, so a rebuild gets the same OS packages and Python build. No
# digest is committed (none could be verified where this was written): `make images`
# refuses to build without PYTHON_DIGEST, and a build with this placeholder fails on the
# invalid reference. Resolve it where you can pull:
#   docker buildx imagetools inspect python:3.11-slim-bookworm --format '{{json .Manifest.Digest}}'
ARG PYTHON_DIGEST=sha256:set-PYTHON_DIGEST-see-Dockerfile

FROM python:${PYTHON_VERSION}-slim-bookworm@${PYTHON_DIGEST} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies first, so a code change does not reinstall them: exactly the lock's pins, each
# file checked against its hash (`make lock` writes requirements/runtime.txt), no dependency resolution and
# no unpinned upgrade of pip. Wheels only: the slim image has no compiler. The project itself is
# not installed: its code is copied to /app below and run from there.
COPY requirements/runtime.txt ./requirements/runtime.txt
RUN pip install --require-hashes --no-deps --only-binary :all: -r requirements/runtime.txt
RUN python -m compileall -q /opt/venv/lib

FROM python:${PYTHON_VERSION}-slim-bookworm@${PYTHON_DIGEST} AS runtime
# A fixed high UID/GID the manifests' securityContext names (runAsUser: 10001).
RUN groupadd --system --gid 10001 agentmesh \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --shell /usr/sbin/nologin agentmesh
COPY --from=build /opt/venv /opt/venv
# The code runs from /app (the working directory is first on sys.path for `python -m`);
# Alembic migrations and prompt files are read from this tree (ROOT = /app).
WORKDIR /app
# Every package the processes import (tests/k8s/test_dockerfile.py keeps this list complete):
# the runtime and generated code under the services and the gateway, llm_tasks under the agent,
# memory and offline model, meshctl for operators' commands.
COPY --chown=root:root runtime ./runtime
COPY --chown=root:root services ./services
COPY --chown=root:root gateway ./gateway
COPY --chown=root:root agentmesh ./agentmesh
COPY --chown=root:root offline_llm ./offline_llm
COPY --chown=root:root llm_tasks ./llm_tasks
COPY --chown=root:root meshctl ./meshctl
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    DATA_DIR=/tmp/agentmesh-data
USER 10001:10001
EXPOSE 50051 50052 50053 50054 50055 8080 9101 9102 9103 9104 9105
# No default server: every Deployment and Job sets its command.
CMD ["python", "-c", "print('set the command: python -m services.<name> | python -m gateway')"]
