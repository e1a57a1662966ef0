"""Long-term memory through the memory service: searched before a turn under a tight
deadline, written after it in the background. Memory is an enrichment: when it is slow
or down the turn goes on without it, and the miss is logged and counted."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from services.agent import metrics
from services.agent.background import BackgroundTasks
from services.agent.settings import AgentSettings
from services.common.clients import open_channel
from services.common.logging import get_logger

log = get_logger(__name__)

MAX_QUERY_CHARS = 2000


class LongTermMemory:
    def __init__(self, settings: AgentSettings) -> None:
        self._enabled = settings.memory_enabled
        self._channel = open_channel(settings.memory_addr)
        self._stub = memory_pb2_grpc.MemoryServiceStub(self._channel)
        self._search_timeout_s = settings.memory_search_timeout_s
        self._limit = settings.memory_search_limit
        self._min_score = settings.memory_min_score
        self._add_timeout_s = settings.memory_add_timeout_s
        self._writes = BackgroundTasks(settings.memory_max_pending_writes)

    async def recall(self, query: str, metadata: tuple[tuple[str, str], ...]) -> list[str]:
        """Facts about the run's user relevant to `query`; [] when there are none or memory
        is unavailable (or the run has no credentials for it)."""
        if not self._enabled:
            return []
        if not metadata:
            metrics.memory_lookups_total.labels(result="error").inc()
            log.warning("memory_search_skipped", reason="no credentials for the run's user")
            return []
        request = memory_pb2.SearchMemoriesRequest(
            query=query[:MAX_QUERY_CHARS], limit=self._limit, min_score=self._min_score
        )
        try:
            response = await self._stub.SearchMemories(request, metadata=metadata, timeout=self._search_timeout_s)
        except grpc.aio.AioRpcError as exc:
            timed_out = exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            metrics.memory_lookups_total.labels(result="timeout" if timed_out else "error").inc()
            log.warning("memory_search_skipped", code=exc.code().name, timeout_s=self._search_timeout_s)
            return []
        facts = [hit.memory.text for hit in response.results if hit.memory.text]
        metrics.memory_lookups_total.labels(result="hit" if facts else "miss").inc()
        return facts

    def remember(
        self,
        *,
        user_message: str,
        answer: str,
        session_id: str,
        context_facts: Sequence[str],
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        if not self._enabled:
            return
        if not metadata:
            metrics.memory_writes_total.labels(result="dropped").inc()
            log.warning("memory_write_dropped", reason="no credentials for the run's user")
            return
        request = memory_pb2.AddMemoriesRequest(
            messages=[
                memory_pb2.ConversationMessage(role="user", content=user_message),
                memory_pb2.ConversationMessage(role="assistant", content=answer),
            ],
            session_id=session_id,
            context_facts=list(context_facts),
        )
        if not self._writes.spawn(self._add(request, metadata)):
            metrics.memory_writes_total.labels(result="dropped").inc()
            log.warning("memory_write_dropped", reason="too many pending writes")

    async def _add(self, request: memory_pb2.AddMemoriesRequest, metadata: tuple[tuple[str, str], ...]) -> None:
        try:
            await self._stub.AddMemories(request, metadata=metadata, timeout=self._add_timeout_s)
        except grpc.aio.AioRpcError as exc:
            metrics.memory_writes_total.labels(result="error").inc()
            log.warning("memory_write_failed", code=exc.code().name)
            return
        metrics.memory_writes_total.labels(result="ok").inc()

    async def close(self, drain_timeout_s: float) -> None:
        cancelled = await self._writes.drain(drain_timeout_s)
        if cancelled:
            log.warning("memory_writes_abandoned", count=cancelled)
        await self._channel.close(grace=None)
