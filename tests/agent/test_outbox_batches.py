"""Traces claimed together from the agent's outbox reach evals in one BatchRecordTraces call.

The delivery runs here against a stand-in evals service and an outbox of its own (a private
schema of the mesh's database, so the mesh's agents never claim these items). An evals
replica that refuses the batch (one trace it will never take) or does not know the call yet
(an older replica during a deploy) gets the traces one by one instead, and only the bad one
is kept as a dead letter.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from agentmesh.evals.v1 import evals_pb2, evals_pb2_grpc
from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from meshctl.mesh import Mesh
from runtime.trace_limits import MAX_BATCH_TRACES
from services.agent.outbox import (
    EVALS_TRACE,
    MEMORY_ADD,
    OutboxDelivery,
    item_columns,
    memory_write,
    trace_batches,
    trace_record,
)
from services.agent.run_schema import migrate
from tests.support.standin import standin_server

BAD_OUTPUT = "refused"


class Evals(evals_pb2_grpc.EvalServiceServicer):
    def __init__(self, batch: grpc.StatusCode | None = None) -> None:
        self.batch_code = batch  # None: the batch call answers; otherwise it fails with this code
        self.batches: list[list[str]] = []
        self.singles: list[str] = []

    async def BatchRecordTraces(self, request, context):
        if self.batch_code is not None:
            await context.abort(self.batch_code, "not this batch")
        self.batches.append([r.trace.trace_id for r in request.requests])
        return evals_pb2.BatchRecordTracesResponse(
            responses=[evals_pb2.RecordTraceResponse(created=True) for _ in request.requests]
        )

    async def RecordTrace(self, request, context):
        if request.trace.output == BAD_OUTPUT:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "never this one")
        self.singles.append(request.trace.trace_id)
        return evals_pb2.RecordTraceResponse(created=True)


class Memory(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(self) -> None:
        self.writes: list[str] = []

    async def AddMemories(self, request, context):
        self.writes.append(request.idempotency_key)
        return memory_pb2.AddMemoriesResponse()


class Identity:
    """The agent's service identity, minus the token (the stand-ins check none)."""

    async def metadata(self, on_behalf_of: str | None = None) -> tuple[tuple[str, str], ...]:
        return (("x-on-behalf-of", on_behalf_of),) if on_behalf_of else ()


@pytest.fixture
async def outbox_pool(mesh: Mesh) -> AsyncIterator[AsyncConnectionPool]:
    schema = f"outbox_batches_{uuid.uuid4().hex[:12]}"
    pool = AsyncConnectionPool(
        mesh.env["DATABASE_URL"],
        min_size=1,
        max_size=4,
        kwargs={"autocommit": True, "prepare_threshold": None, "options": f"-c search_path={schema}"},
        open=False,
    )
    await pool.open(wait=True)
    async with pool.connection() as conn:
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    await migrate(pool)
    try:
        yield pool
    finally:
        async with pool.connection() as conn:
            await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        await pool.close()


async def _enqueue(pool: AsyncConnectionPool, outputs: list[str], memory_writes: int = 0) -> list[str]:
    """Trace items (one per output) and memory writes, as finished runs leave them; the trace ids."""
    user_id = str(uuid.uuid4())
    traces = [evals_pb2.Trace(trace_id=str(uuid.uuid4()), user_id=user_id, input="q", output=o) for o in outputs]
    writes = [
        memory_write(user_id, memory_pb2.AddMemoriesRequest(idempotency_key=str(uuid.uuid4())))
        for _ in range(memory_writes)
    ]
    columns = item_columns([*(trace_record(t) for t in traces), *writes])
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO outbox (kind, user_id, payload, trace_context)"
            " SELECT * FROM unnest(%(kinds)s::text[], %(users)s::uuid[], %(payloads)s::bytea[], %(contexts)s::text[])",
            columns,
        )
    return [t.trace_id for t in traces]


async def _left(pool: AsyncConnectionPool) -> dict[str, int]:
    async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT count(*) FILTER (WHERE dead_at IS NULL) AS due, count(dead_at) AS dead FROM outbox")
        return dict(await cur.fetchone() or {})


async def _deliver(pool: AsyncConnectionPool, evals: Evals, memory: Memory | None = None) -> int:
    def add(server: grpc.aio.Server) -> None:
        evals_pb2_grpc.add_EvalServiceServicer_to_server(evals, server)
        if memory is not None:
            memory_pb2_grpc.add_MemoryServiceServicer_to_server(memory, server)

    async with (
        standin_server(add, ["agentmesh.evals.v1.EvalService"]) as (addr, _),
        grpc.aio.insecure_channel(addr) as channel,
    ):
        delivery = OutboxDelivery(
            pool,
            Identity(),  # type: ignore[arg-type]
            memory=memory_pb2_grpc.MemoryServiceStub(channel) if memory is not None else None,
            evals=evals_pb2_grpc.EvalServiceStub(channel),
            timeout_s=5,
            max_backoff_s=0.5,
        )
        return await delivery.deliver_due()


async def test_traces_claimed_together_go_in_one_call(outbox_pool: AsyncConnectionPool) -> None:
    trace_ids = await _enqueue(outbox_pool, ["a", "b", "c"], memory_writes=2)
    evals, memory = Evals(), Memory()
    assert await _deliver(outbox_pool, evals, memory) == 5
    assert [sorted(batch) for batch in evals.batches] == [sorted(trace_ids)]
    assert evals.singles == []
    assert len(memory.writes) == 2  # memory writes still go one by one (each its own user)
    assert await _left(outbox_pool) == {"due": 0, "dead": 0}


async def test_one_trace_alone_goes_as_before(outbox_pool: AsyncConnectionPool) -> None:
    trace_ids = await _enqueue(outbox_pool, ["a"])
    evals = Evals()
    await _deliver(outbox_pool, evals)
    assert (evals.batches, evals.singles) == ([], trace_ids)


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED]
)
async def test_a_refused_batch_is_sent_trace_by_trace(outbox_pool: AsyncConnectionPool, code: grpc.StatusCode) -> None:
    good, bad, other = await _enqueue(outbox_pool, ["a", BAD_OUTPUT, "c"])
    evals = Evals(batch=code)
    await _deliver(outbox_pool, evals)
    assert sorted(evals.singles) == sorted([good, other])
    assert bad not in evals.singles
    assert await _left(outbox_pool) == {"due": 0, "dead": 1}  # only the bad one, as a dead letter


async def test_a_batch_evals_cannot_take_now_is_retried_whole(outbox_pool: AsyncConnectionPool) -> None:
    await _enqueue(outbox_pool, ["a", "b"])
    await _deliver(outbox_pool, Evals(batch=grpc.StatusCode.UNAVAILABLE))
    assert await _left(outbox_pool) == {"due": 2, "dead": 0}


def test_batches_stay_under_the_byte_and_count_limits() -> None:
    def row(i: int, size: int, kind: str = EVALS_TRACE) -> dict:
        return {"id": i, "kind": kind, "payload": b"x" * size}

    k = 1024
    rows = [row(1, 300 * k), row(2, 300 * k), row(3, 10 * k), row(4, 600 * k), row(5, 10 * k), row(6, 5, MEMORY_ADD)]
    # 1 alone (2 does not fit beside it), 2 and 3 together, 4 alone (too large to share), 5 alone (4 was full).
    assert [[r["id"] for r in group] for group in trace_batches(rows)] == [[2, 3]]
    many = [row(i, 100) for i in range(MAX_BATCH_TRACES + 50)]
    assert [len(group) for group in trace_batches(many)] == [MAX_BATCH_TRACES, 50]
