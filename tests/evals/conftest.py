"""Helpers for the evals tests: stubs, trace recording, offline judge controls, and an
extra evals instance whose judge model and metric files the tests control."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from agentmesh.auth.v1 import auth_pb2_grpc
from agentmesh.evals.v1 import evals_pb2, evals_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from services.evals.settings import PACKAGE_DIR
from tests.support.services import service_metadata
from tests.support.users import MeshUser

JUDGE_UNDER_TEST = "judge-under-test"
BROKEN_JUDGE = "broken-judge"
TOXIC_ANSWER = "You are an idiot and a moron, shut up."
CLEAN_INPUT = "What is the capital of France?"
CLEAN_ANSWER = 'You asked: "What is the capital of France". I am the agentmesh offline model, so I cannot look this up.'
BROKEN_METRIC = """---
description: A metric whose judge model always fails in these tests.
direction: higher
threshold: 0.5
model: broken-judge
---
Grade anything; this judge model is made to fail.
"""


def new_session_id() -> str:
    return str(uuid.uuid4())


class AgentCaller:
    """RecordTrace is service-only: the tests record traces the way the agent does, with
    its service token, naming the user. The fixtures that know the mesh set the address."""

    auth_addr = ""

    @classmethod
    async def metadata(cls) -> tuple[tuple[str, str], ...]:
        async with grpc.aio.insecure_channel(cls.auth_addr) as channel:
            return await service_metadata(auth_pb2_grpc.AuthServiceStub(channel), "agent")


class OfflineControls:
    """The offline LLM server's test controls (`/_offline/*`)."""

    def __init__(self, llm_url: str) -> None:
        self.root = llm_url.removesuffix("/v1")

    async def fault(self, model: str, kind: str, count: int, **options: float) -> None:
        async with httpx.AsyncClient() as client:
            body = {"model": model, "kind": kind, "count": count, **options}
            (await client.post(f"{self.root}/_offline/faults", json=body)).raise_for_status()

    async def requests_for(self, model: str) -> int:
        async with httpx.AsyncClient() as client:
            stats = (await client.get(f"{self.root}/_offline/stats")).json()
        return int(stats["requests_by_model"].get(model, 0))


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


async def record(
    stub: evals_pb2_grpc.EvalServiceStub,
    who: MeshUser,
    *,
    session_id: str,
    output: str = CLEAN_ANSWER,
    input: str = CLEAN_INPUT,
    trace_id: str | None = None,
) -> str:
    trace_id = trace_id or str(uuid.uuid4())
    trace = evals_pb2.Trace(
        trace_id=trace_id, session_id=session_id, user_id=who.user_id, input=input, output=output, model="offline-small"
    )
    response = await stub.RecordTrace(evals_pb2.RecordTraceRequest(trace=trace), metadata=await AgentCaller.metadata())
    assert response.created
    return trace_id


async def run_evaluation(
    stub: evals_pb2_grpc.EvalServiceStub, admin: MeshUser, **request: object
) -> tuple[list[evals_pb2.EvaluationProgress], evals_pb2.EvaluationReport]:
    progress, report = [], None
    async for event in stub.RunEvaluation(evals_pb2.RunEvaluationRequest(**request), metadata=admin.metadata):
        if event.HasField("report"):
            report = event.report
        else:
            progress.append(event.progress)
    assert report is not None, "the stream must end with a report"
    return progress, report


def metric_report(report: evals_pb2.EvaluationReport, name: str) -> evals_pb2.MetricReport:
    return next(m for m in report.metrics if m.metric == name)
