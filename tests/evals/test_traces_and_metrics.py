"""RecordTrace and ListMetrics against the evals service in the mesh."""

from __future__ import annotations

import uuid

import grpc
import pytest

from agentmesh.evals.v1 import evals_pb2
from tests.support.evals import AgentCaller, new_session_id, record
from tests.support.grpc_errors import error_reason
from tests.support.users import MeshUser


async def test_list_metrics_describes_every_markdown_file(evals, user: MeshUser) -> None:
    response = await evals.ListMetrics(evals_pb2.ListMetricsRequest(), metadata=user.metadata)
    metrics = {m.name: m for m in response.metrics}
    assert set(metrics) == {"conciseness", "hallucination", "helpfulness", "relevancy", "toxicity"}
    assert metrics["toxicity"].direction == evals_pb2.Metric.DIRECTION_LOWER_IS_BETTER
    assert metrics["toxicity"].threshold == pytest.approx(0.2)
    assert metrics["relevancy"].direction == evals_pb2.Metric.DIRECTION_HIGHER_IS_BETTER
    assert "offensive" in metrics["toxicity"].description


async def test_record_trace_is_idempotent_on_trace_id(evals, user: MeshUser) -> None:
    trace_id = await record(evals, user, session_id=new_session_id())
    again = evals_pb2.Trace(trace_id=trace_id, user_id=user.user_id, input="changed", output="changed")
    response = await evals.RecordTrace(evals_pb2.RecordTraceRequest(trace=again), metadata=await AgentCaller.metadata())
    assert response.created is False


@pytest.mark.parametrize(
    ("trace", "reason"),
    [
        (evals_pb2.Trace(trace_id="", input="q", output="a"), "TRACE_ID_REQUIRED"),
        (evals_pb2.Trace(trace_id="x" * 129, input="q", output="a"), "TRACE_ID_INVALID"),
        (evals_pb2.Trace(trace_id=str(uuid.uuid4()), input="q", output="a" * 100_001), "TRACE_FIELD_TOO_LONG"),
        (evals_pb2.Trace(trace_id=str(uuid.uuid4()), input="q" * 100_001, output="a"), "TRACE_FIELD_TOO_LONG"),
    ],
)
async def test_record_trace_rejects_bad_input(evals, user: MeshUser, trace: evals_pb2.Trace, reason: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        trace.user_id = user.user_id
        await evals.RecordTrace(evals_pb2.RecordTraceRequest(trace=trace), metadata=await AgentCaller.metadata())
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == reason


async def test_users_cannot_record_traces_not_even_their_own(
    evals, user: MeshUser, other_user: MeshUser, admin: MeshUser
) -> None:
    # Before: any user could post traces (under anyone's session id); now only services.
    for caller, owner in ((user, other_user), (user, user), (admin, user)):
        trace = evals_pb2.Trace(trace_id=str(uuid.uuid4()), user_id=owner.user_id, input="q", output="a")
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await evals.RecordTrace(evals_pb2.RecordTraceRequest(trace=trace), metadata=caller.metadata)
        assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert error_reason(error.value) == "SERVICE_ONLY"


async def test_a_service_trace_must_name_its_user(evals) -> None:
    trace = evals_pb2.Trace(trace_id=str(uuid.uuid4()), input="q", output="a")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await evals.RecordTrace(evals_pb2.RecordTraceRequest(trace=trace), metadata=await AgentCaller.metadata())
    assert error_reason(error.value) == "USER_ID_REQUIRED"


async def test_record_trace_needs_a_token(evals) -> None:
    trace = evals_pb2.Trace(trace_id="anonymous", input="q", output="a")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await evals.RecordTrace(evals_pb2.RecordTraceRequest(trace=trace))
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
