"""Hand-offs that must not be lost: what a finished run owes other services (the user's
memory write, the turn's trace) is written to the agent's own database in the same
transaction that records the run's end, then delivered until the receiver accepts it.

Every replica delivers: an item is claimed for a while (`locked_until`) with SKIP LOCKED,
so two replicas never send it at once, and a replica that dies mid-delivery only delays
it. Receivers are idempotent (the memory write carries the run id as its idempotency key,
the trace its trace id), so a delivery repeated after a lost answer changes nothing.
Items a receiver refuses for good (bad request, unknown user) are kept as dead letters
and counted, never retried forever. Each item keeps the W3C trace context of the run
that wrote it, so its delivery is still a span of the turn's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import psycopg
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from agentmesh.evals.v1 import evals_pb2, evals_pb2_grpc
from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from runtime.errors import DomainError
from runtime.logging import get_logger
from runtime.service_identity import ServiceIdentity
from runtime.trace_limits import MAX_BATCH_TRACES, MAX_TRACE_BYTES
from runtime.tracing import tracer
from services.agent import metrics
from services.agent.trace_fit import fit_trace

log = get_logger(__name__)

MEMORY_ADD = "memory.add"
EVALS_TRACE = "evals.trace"

CLAIM_DUE = (
    "UPDATE outbox SET locked_until = clock_timestamp() + make_interval(secs => %(lock_s)s),"
    " attempts = attempts + 1 WHERE id IN (SELECT id FROM outbox WHERE dead_at IS NULL"
    " AND next_attempt_at <= clock_timestamp() AND (locked_until IS NULL OR locked_until < clock_timestamp())"
    " ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED) RETURNING id, kind, user_id, payload, attempts, trace_context"
)
DELIVERED = "DELETE FROM outbox WHERE id = ANY(%s)"
RETRY_LATER = (
    "UPDATE outbox SET locked_until = NULL, last_error = %(error)s,"
    " next_attempt_at = clock_timestamp() + make_interval(secs => %(delay_s)s) WHERE id = %(id)s"
)
DEAD = "UPDATE outbox SET dead_at = clock_timestamp(), locked_until = NULL, last_error = %(error)s WHERE id = %(id)s"
DEPTH = (
    "SELECT kind, count(*) AS n, coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0) AS age_s"
    " FROM outbox WHERE dead_at IS NULL GROUP BY kind"
)

# Items of turns ending while a batch is delivered are claimed together in the next one.
CLAIM_LIMIT = 20
# The depth gauges cost a scan of the table: refreshed this often, not after every batch.
DEPTH_REPORT_S = 5.0

# Traces claimed together go to evals in one BatchRecordTraces call from this many on, as
# many as fit in MAX_TRACE_BYTES (what one trace may be: well under the receiver's message
# limit) and MAX_BATCH_TRACES. A trace too large to share a call goes on its own.
TRACE_BATCH_MIN = 2


def trace_batches(claimed: Sequence[dict]) -> list[list[dict]]:
    """The claimed traces in groups for BatchRecordTraces (groups of one are left out)."""
    groups: list[list[dict]] = []
    group: list[dict] = []
    size = 0
    for row in claimed:
        if row["kind"] != EVALS_TRACE:
            continue
        payload = len(row["payload"])
        if group and (size + payload > MAX_TRACE_BYTES or len(group) == MAX_BATCH_TRACES):
            groups.append(group)
            group, size = [], 0
        group.append(row)
        size += payload
    groups.append(group)
    return [g for g in groups if len(g) >= TRACE_BATCH_MIN]


# Codes that mean the receiver will never take this item; anything else is retried.
REFUSED_FOR_GOOD = frozenset(
    {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
)
# A batch answered with these is sent again one trace per call: a receiver without the batch
# call (an older replica mid-deploy), or one whose message limit the batch passed.
BATCH_NOT_TAKEN = frozenset({grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True)
class OutboxItem:
    kind: str
    user_id: str
    payload: bytes
    trace_context: str = ""


def _stored_trace_context(row: dict) -> otel_context.Context:
    """The context of the run that wrote a claimed item (its W3C trace context)."""
    return propagate.extract(json.loads(row["trace_context"]) if row["trace_context"] else {})


def _current_trace_context() -> str:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return json.dumps(carrier) if carrier else ""


def memory_write(user_id: str, request: memory_pb2.AddMemoriesRequest) -> OutboxItem:
    return OutboxItem(MEMORY_ADD, user_id, request.SerializeToString(), _current_trace_context())


def trace_record(trace: evals_pb2.Trace) -> OutboxItem:
    """The trace as a hand-off, cut to what evals takes (trace_fit) so it is never refused."""
    if fit_trace(trace):
        log.warning("trace_trimmed", trace_id=trace.trace_id, tool_calls=len(trace.tool_calls))
    payload = evals_pb2.RecordTraceRequest(trace=trace).SerializeToString()
    return OutboxItem(EVALS_TRACE, trace.user_id, payload, _current_trace_context())


def item_columns(items: Sequence[OutboxItem]) -> dict[str, list[Any]]:
    """The items as the parallel arrays the run's end statement inserts (run_store.FINISH_RUN)."""
    return {
        "kinds": [item.kind for item in items],
        "users": [uuid.UUID(item.user_id) for item in items],
        "payloads": [item.payload for item in items],
        "contexts": [item.trace_context for item in items],
    }


def backoff_s(attempts: int, cap_s: float) -> float:
    # Full jitter: a receiver back from an outage is not stampeded by every replica at once.
    return random.uniform(0, min(cap_s, 0.5 * 2 ** min(attempts, 12)))


class OutboxDelivery:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        identity: ServiceIdentity,
        *,
        memory: memory_pb2_grpc.MemoryServiceStub | None,
        evals: evals_pb2_grpc.EvalServiceStub | None,
        timeout_s: float,
        max_backoff_s: float,
        idle_poll_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self._identity = identity
        self._senders: dict[str, Callable[[bytes, str], Awaitable[None]]] = {}
        self._evals = evals
        if memory is not None:
            self._senders[MEMORY_ADD] = self._sender(
                memory.AddMemories, memory_pb2.AddMemoriesRequest, act_as_user=True
            )
        if evals is not None:
            self._senders[EVALS_TRACE] = self._sender(
                evals.RecordTrace, evals_pb2.RecordTraceRequest, act_as_user=False
            )
        self._timeout_s = timeout_s
        self._max_backoff_s = max_backoff_s
        self._idle_poll_s = idle_poll_s
        self._due = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _sender(
        self, call: Callable[..., Awaitable[object]], request_type: type, *, act_as_user: bool
    ) -> Callable[[bytes, str], Awaitable[None]]:
        async def send(payload: bytes, user_id: str) -> None:
            metadata = await self._identity.metadata(on_behalf_of=user_id if act_as_user else None)
            await call(request_type.FromString(payload), metadata=metadata, timeout=self._timeout_s)

        return send

    def start(self) -> None:
        self._task = asyncio.create_task(self._deliver_forever(), name="outbox-delivery")

    def poke(self) -> None:
        """New items are waiting: deliver now instead of at the next poll."""
        self._due.set()

    async def _deliver_forever(self) -> None:
        reported_at = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), self._idle_poll_s)
            self._due.clear()
            try:
                while await self.deliver_due() == CLAIM_LIMIT:
                    pass
                if time.monotonic() - reported_at >= DEPTH_REPORT_S:
                    reported_at = time.monotonic()
                    await self._report_depth()
            except (psycopg.Error, OSError) as exc:
                log.warning("outbox_delivery_paused", error=type(exc).__name__)

    async def deliver_due(self, limit: int = CLAIM_LIMIT) -> int:
        """Delivers one batch of due items; returns how many were claimed."""
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(CLAIM_DUE, {"lock_s": self._timeout_s * 3, "limit": limit})
            claimed = await cur.fetchall()
        if claimed:
            outcomes = await self._deliver_all(claimed)
            delivered = [row["id"] for row, done in zip(claimed, outcomes, strict=True) if done]
            if delivered:
                async with self._pool.connection() as conn:
                    await conn.execute(DELIVERED, (delivered,))
                for row, done in zip(claimed, outcomes, strict=True):
                    if done:
                        metrics.outbox_delivered_total.labels(kind=row["kind"], result="delivered").inc()
        return len(claimed)

    async def _deliver_all(self, claimed: list[dict]) -> list[bool]:
        """Delivers a claimed batch: its traces in as few calls as fit, the rest item by item."""
        groups = trace_batches(claimed) if self._evals is not None else []
        batched = {row["id"] for group in groups for row in group}
        singles = [row for row in claimed if row["id"] not in batched]
        single_outcomes, group_outcomes = await asyncio.gather(
            asyncio.gather(*(self._deliver(row) for row in singles)),
            asyncio.gather(*(self._deliver_traces(group) for group in groups)),
        )
        done = {row["id"]: ok for row, ok in zip(singles, single_outcomes, strict=True)}
        for group, oks in zip(groups, group_outcomes, strict=True):
            done.update(zip((row["id"] for row in group), oks, strict=True))
        return [done[row["id"]] for row in claimed]

    async def _deliver_traces(self, rows: list[dict]) -> list[bool]:
        """Several turns' traces in one BatchRecordTraces call. It is all or nothing, so when
        evals refuses it (one trace it will never take), does not know the call yet (an older
        replica mid-deploy) or finds it too large, each goes on its own, and only a bad one is
        kept as a dead letter. The call's span links to every turn's trace, joining none."""
        assert self._evals is not None
        request = evals_pb2.BatchRecordTracesRequest(
            requests=[evals_pb2.RecordTraceRequest.FromString(bytes(row["payload"])) for row in rows]
        )
        links = []
        for row in rows:
            span_context = trace.get_current_span(_stored_trace_context(row)).get_span_context()
            if span_context.is_valid:
                links.append(trace.Link(span_context))
        with tracer().start_as_current_span("outbox deliver traces", context=otel_context.Context(), links=links):
            try:
                metadata = await self._identity.metadata()
                await self._evals.BatchRecordTraces(request, metadata=metadata, timeout=self._timeout_s)
                return [True] * len(rows)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in REFUSED_FOR_GOOD or exc.code() in BATCH_NOT_TAKEN:
                    return list(await asyncio.gather(*(self._deliver(row) for row in rows)))
                error = exc.code().name
            except DomainError as exc:  # no service token (auth unreachable)
                error = exc.reason
        await asyncio.gather(*(self._retry(row["id"], EVALS_TRACE, row["attempts"], error) for row in rows))
        return [False] * len(rows)

    async def _deliver(self, row: dict) -> bool:
        """Sends one claimed item: True when the receiver has it (the caller deletes it),
        False when it was scheduled for a retry or kept as a dead letter."""
        kind, item_id = row["kind"], row["id"]
        send = self._senders.get(kind)
        if send is None:
            await self._retry(item_id, kind, row["attempts"], f"{kind} delivery is disabled here")
            return False
        attached = otel_context.attach(_stored_trace_context(row))
        try:
            await send(bytes(row["payload"]), str(row["user_id"]))
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.ALREADY_EXISTS:
                pass  # delivered before; the answer was lost
            elif exc.code() in REFUSED_FOR_GOOD:
                await self._dead(item_id, kind, f"{exc.code().name}: {exc.details()}")
                return False
            else:
                await self._retry(item_id, kind, row["attempts"], exc.code().name)
                return False
        except DomainError as exc:  # no service token (auth unreachable)
            await self._retry(item_id, kind, row["attempts"], exc.reason)
            return False
        finally:
            otel_context.detach(attached)
        return True

    async def _retry(self, item_id: int, kind: str, attempts: int, error: str) -> None:
        delay = backoff_s(attempts, self._max_backoff_s)
        async with self._pool.connection() as conn:
            await conn.execute(RETRY_LATER, {"id": item_id, "error": error[:500], "delay_s": delay})
        metrics.outbox_delivered_total.labels(kind=kind, result="retry").inc()
        log.info("outbox_delivery_retry", kind=kind, attempts=attempts, error=error, delay_s=round(delay, 2))

    async def _dead(self, item_id: int, kind: str, error: str) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(DEAD, {"id": item_id, "error": error[:500]})
        metrics.outbox_delivered_total.labels(kind=kind, result="dead").inc()
        log.warning("outbox_item_refused", kind=kind, error=error)

    async def _report_depth(self) -> None:
        async with self._pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(DEPTH)
            rows = {row["kind"]: row for row in await cur.fetchall()}
        for kind in (MEMORY_ADD, EVALS_TRACE):
            row = rows.get(kind)
            metrics.outbox_depth.labels(kind=kind).set(row["n"] if row else 0)
            metrics.outbox_oldest_age_seconds.labels(kind=kind).set(float(row["age_s"]) if row else 0.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
