"""RecordTrace and ListMetrics against the evals service in the mesh."""

from __future__ import annotations

import asyncio
import random
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


def _trace(user: MeshUser, **fields: object) -> evals_pb2.RecordTraceRequest:
    trace = evals_pb2.Trace(trace_id=str(uuid.uuid4()), user_id=user.user_id, **{"input": "q", "output": "a", **fields})
    return evals_pb2.RecordTraceRequest(trace=trace)


async def test_a_batch_records_each_trace_once(evals, user: MeshUser) -> None:
    agent = await AgentCaller.metadata()
    first, second, new = _trace(user, session_id=new_session_id()), _trace(user, latency_ms=12), _trace(user)
    response = await evals.BatchRecordTraces(
        evals_pb2.BatchRecordTracesRequest(requests=[first, second]), metadata=agent
    )
    assert [r.created for r in response.responses] == [True, True]
    # Old ones, a new one, and the new one again in the same batch: new once, in order.
    response = await evals.BatchRecordTraces(
        evals_pb2.BatchRecordTracesRequest(requests=[first, new, second, new]), metadata=agent
    )
    assert [r.created for r in response.responses] == [False, True, False, False]
    again = await evals.RecordTrace(new, metadata=agent)
    assert again.created is False


async def test_a_batch_with_one_bad_trace_stores_nothing_and_names_it(evals, user: MeshUser) -> None:
    agent = await AgentCaller.metadata()
    good, bad = _trace(user), _trace(user, output="a" * 100_001)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await evals.BatchRecordTraces(evals_pb2.BatchRecordTracesRequest(requests=[good, bad]), metadata=agent)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == "TRACE_FIELD_TOO_LONG"
    assert "requests[1]" in (error.value.details() or "")
    assert (await evals.RecordTrace(good, metadata=agent)).created is True  # the good one was not stored


@pytest.mark.parametrize(("size", "reason"), [(0, "BATCH_EMPTY"), (101, "BATCH_TOO_LARGE")])
async def test_a_batch_must_hold_one_to_a_hundred_traces(evals, user: MeshUser, size: int, reason: str) -> None:
    request = evals_pb2.BatchRecordTracesRequest(requests=[_trace(user) for _ in range(size)])
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await evals.BatchRecordTraces(request, metadata=await AgentCaller.metadata())
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(error.value) == reason


async def test_users_cannot_record_batches(evals, user: MeshUser) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await evals.BatchRecordTraces(
            evals_pb2.BatchRecordTracesRequest(requests=[_trace(user)]), metadata=user.metadata
        )
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_reason(error.value) == "SERVICE_ONLY"


async def test_concurrent_batches_sharing_traces_each_record_them_once(evals, user: MeshUser) -> None:
    # Batches that share trace ids, at once and each in another order: every trace is created
    # exactly once, and no batch fails (the store inserts in one order, so none deadlocks).
    agent = await AgentCaller.metadata()
    shared = [_trace(user) for _ in range(50)]
    rng = random.Random(19)
    batches = [rng.sample(shared, len(shared)) for _ in range(8)]
    responses = await asyncio.gather(
        *(evals.BatchRecordTraces(evals_pb2.BatchRecordTracesRequest(requests=b), metadata=agent) for b in batches)
    )
    created = [r.created for response in responses for r in response.responses]
    assert sum(created) == len(shared)
