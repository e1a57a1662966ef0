"""The evals service seen from tests: recording traces the way the agent does, running an
evaluation to its report, and the offline judge's controls."""

from __future__ import annotations

import uuid

import grpc
import httpx

from agentmesh.auth.v1 import auth_pb2_grpc
from agentmesh.evals.v1 import evals_pb2, evals_pb2_grpc
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
