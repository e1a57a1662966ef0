"""Long-term memory through the memory service: searched before a turn under a tight
deadline; written after it through the outbox (`outbox.py`), so a write survives the
memory service being down. Memory is an enrichment: when a search is slow or fails the
turn goes on without it, and the miss is logged and counted."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from runtime.clients import open_channel
from runtime.logging import get_logger
from services.agent import metrics
from services.agent.run_rows import RunRow
from services.agent.settings import AgentSettings

log = get_logger(__name__)

MAX_QUERY_CHARS = 2000


class LongTermMemory:
    def __init__(self, settings: AgentSettings) -> None:
        self.enabled = settings.memory_enabled
        self._channel = open_channel(settings.memory_addr)
        self.stub = memory_pb2_grpc.MemoryServiceStub(self._channel)
        self._search_timeout_s = settings.memory_search_timeout_s
        self._limit = settings.memory_search_limit
        self._min_score = settings.memory_min_score

    async def recall(self, query: str, metadata: Sequence[tuple[str, str]]) -> list[str]:
        """Facts about the run's user (named in `metadata`) relevant to `query`; [] when
        there are none or memory is unavailable."""
        request = memory_pb2.SearchMemoriesRequest(
            query=query[:MAX_QUERY_CHARS], limit=self._limit, min_score=self._min_score
        )
        try:
            response = await self.stub.SearchMemories(request, metadata=metadata, timeout=self._search_timeout_s)
        except grpc.aio.AioRpcError as exc:
            timed_out = exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            metrics.memory_lookups_total.labels(result="timeout" if timed_out else "error").inc()
            log.warning("memory_search_skipped", code=exc.code().name, timeout_s=self._search_timeout_s)
            return []
        facts = [hit.memory.text for hit in response.results if hit.memory.text]
        metrics.memory_lookups_total.labels(result="hit" if facts else "miss").inc()
        return facts

    @staticmethod
    def write_request(run: RunRow, answer: str, context_facts: Sequence[str]) -> memory_pb2.AddMemoriesRequest:
        """The turn as a memory write; the run id makes a redelivered write change nothing."""
        return memory_pb2.AddMemoriesRequest(
            messages=[
                memory_pb2.ConversationMessage(role="user", content=run.input),
                memory_pb2.ConversationMessage(role="assistant", content=answer),
            ],
            session_id=run.session_id,
            context_facts=list(context_facts),
            idempotency_key=run.run_id,
        )

    async def close(self) -> None:
        await self._channel.close(grace=None)
