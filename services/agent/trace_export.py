"""Turn traces to the evals service, off the request path: a bounded queue and one
worker. A full queue or an unreachable evals service drops the trace and counts it;
a turn never waits for its trace.

RecordTrace is a service-only call: the agent records each trace as itself (its service
token, services.common.service_identity), and the trace names the user (`user_id`).
The user's own token is not used, so a trace sent after it expired still arrives."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from opentelemetry import context as otel_context

from agentmesh.evals.v1 import evals_pb2, evals_pb2_grpc
from services.agent import metrics
from services.agent.settings import AgentSettings
from services.common.clients import open_channel
from services.common.errors import DomainError
from services.common.logging import get_logger
from services.common.service_identity import ServiceIdentity

log = get_logger(__name__)

Metadata = tuple[tuple[str, str], ...]


class TraceExport:
    def __init__(self, settings: AgentSettings) -> None:
        self._enabled = settings.evals_enabled
        self._channel = open_channel(settings.evals_addr)
        self._stub = evals_pb2_grpc.EvalServiceStub(self._channel)
        self._identity = ServiceIdentity.from_settings(settings, "agent")
        self._timeout_s = settings.eval_timeout_s
        self._queue: asyncio.Queue[tuple[evals_pb2.Trace, Metadata, otel_context.Context]] = asyncio.Queue(
            settings.eval_queue_size
        )
        self._worker: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._enabled:
            self._worker = asyncio.create_task(self._send_forever(), name="eval-trace-export")

    def submit(self, trace: evals_pb2.Trace, metadata: Metadata) -> None:
        """Queues the trace; `metadata` is the turn's, of which only the request id is
        kept (the call is made with the agent's own service token)."""
        if self._worker is None:
            return
        try:
            # The turn's trace context travels with the item, so the RecordTrace call made
            # later by the worker is still a span of the turn's trace.
            self._queue.put_nowait((trace, metadata, otel_context.get_current()))
        except asyncio.QueueFull:
            metrics.eval_traces_total.labels(result="dropped").inc()
            log.warning("eval_trace_dropped", reason="queue full", trace_id=trace.trace_id)

    async def _send_forever(self) -> None:
        while True:
            trace, metadata, turn_context = await self._queue.get()
            attached = otel_context.attach(turn_context)
            try:
                request_id = tuple((key, value) for key, value in metadata if key == "x-request-id")
                as_agent = tuple(e for e in await self._identity.metadata() if e[0] != "x-request-id") + request_id
                await self._stub.RecordTrace(
                    evals_pb2.RecordTraceRequest(trace=trace), metadata=as_agent, timeout=self._timeout_s
                )
                metrics.eval_traces_total.labels(result="sent").inc()
            except grpc.aio.AioRpcError as exc:
                metrics.eval_traces_total.labels(result="dropped").inc()
                log.warning("eval_trace_dropped", reason=exc.code().name, trace_id=trace.trace_id)
            except DomainError as exc:  # no service token: auth unreachable
                metrics.eval_traces_total.labels(result="dropped").inc()
                log.warning("eval_trace_dropped", reason=exc.reason, trace_id=trace.trace_id)
            finally:
                otel_context.detach(attached)
                self._queue.task_done()

    async def close(self, drain_timeout_s: float) -> None:
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), drain_timeout_s)
            if self._queue.qsize():
                log.warning("eval_traces_abandoned", count=self._queue.qsize())
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await self._channel.close(grace=None)
        await self._identity.close()
