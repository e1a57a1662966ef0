"""Fixtures for the evals tests: stubs, offline judge controls, and an extra evals instance
whose judge model and metric files the tests control."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest

from agentmesh.evals.v1 import evals_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from services.evals.settings import PACKAGE_DIR
from tests.support.evals import BROKEN_METRIC, JUDGE_UNDER_TEST, AgentCaller, OfflineControls


@pytest.fixture(scope="session")
def offline(mesh: Mesh) -> OfflineControls:
    return OfflineControls(mesh.llm_url)


@pytest.fixture
async def evals(mesh: Mesh) -> AsyncIterator[evals_pb2_grpc.EvalServiceStub]:
    AgentCaller.auth_addr = mesh.addr("auth")
    async with grpc.aio.insecure_channel(mesh.addr("evals")) as channel:
        yield evals_pb2_grpc.EvalServiceStub(channel)


@pytest.fixture(scope="session")
def judge_instance(mesh: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChildProcess]:
    """A second evals replica (same database) judging with its own model name, so faults
    injected on it touch no other process, and with one extra metric whose judge fails."""
    AgentCaller.auth_addr = mesh.addr("auth")
    metrics_dir: Path = tmp_path_factory.mktemp("metrics")
    for path in (PACKAGE_DIR / "metrics").glob("*.md"):
        shutil.copy(path, metrics_dir / path.name)
    (metrics_dir / "broken.md").write_text(BROKEN_METRIC)
    child = mesh.start_service(
        "evals",
        instance="-judge",
        JUDGE_MODEL=JUDGE_UNDER_TEST,
        JUDGE_CONCURRENCY="2",
        LLM_BACKOFF_BASE_S="0.01",
        EVALS_METRICS_DIR=str(metrics_dir),
    )
    yield child
    child.stop()


@pytest.fixture
async def judge_evals(judge_instance: ChildProcess) -> AsyncIterator[evals_pb2_grpc.EvalServiceStub]:
    async with grpc.aio.insecure_channel(judge_instance.addr) as channel:
        yield evals_pb2_grpc.EvalServiceStub(channel)
