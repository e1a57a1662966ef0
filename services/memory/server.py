"""agentmesh.memory.v1.MemoryService: every call scoped to the caller."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from services.common.principal import current_principal
from services.memory.memories import AddRequest, Memories
from services.memory.resolution import Outcome
from services.memory.store import MemoryRow

EVENT_ACTIONS = {
    "ADD": memory_pb2.MemoryEvent.ADD,
    "UPDATE": memory_pb2.MemoryEvent.UPDATE,
    "DELETE": memory_pb2.MemoryEvent.DELETE,
    "NOOP": memory_pb2.MemoryEvent.NOOP,
}


def memory_message(row: MemoryRow) -> memory_pb2.Memory:
    created, updated = Timestamp(), Timestamp()
    created.FromDatetime(row.created_at)
    updated.FromDatetime(row.updated_at)
    return memory_pb2.Memory(
        memory_id=row.id, text=row.text, session_id=row.session_id, created_at=created, updated_at=updated
    )


def event_message(outcome: Outcome) -> memory_pb2.MemoryEvent:
    # A NOOP with nothing stored behind it (a retraction of an unknown fact) still says
    # which candidate it was about.
    memory = memory_message(outcome.memory) if outcome.memory else memory_pb2.Memory(text=outcome.candidate)
    return memory_pb2.MemoryEvent(
        event=EVENT_ACTIONS[outcome.action], memory=memory, previous_text=outcome.previous_text
    )


def add_request(request: memory_pb2.AddMemoriesRequest) -> AddRequest:
    return AddRequest(
        messages=[(m.role, m.content) for m in request.messages],
        facts=list(request.facts),
        session_id=request.session_id,
        context_facts=list(request.context_facts),
    )


class MemoryServicer(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(self, memories: Memories) -> None:
        self._memories = memories

    async def AddMemories(self, request: memory_pb2.AddMemoriesRequest, context: grpc.aio.ServicerContext):
        outcomes = await self._memories.add(current_principal().user_id, add_request(request))
        return memory_pb2.AddMemoriesResponse(events=[event_message(o) for o in outcomes])

    async def SearchMemories(self, request: memory_pb2.SearchMemoriesRequest, context: grpc.aio.ServicerContext):
        user_id = current_principal().user_id
        hits = await self._memories.search(user_id, request.query, request.limit, request.min_score)
        results = [memory_pb2.SearchResult(memory=memory_message(h.memory), score=h.score) for h in hits]
        return memory_pb2.SearchMemoriesResponse(results=results)

    async def ListMemories(self, request: memory_pb2.ListMemoriesRequest, context: grpc.aio.ServicerContext):
        rows, token = await self._memories.list(current_principal().user_id, request.page_size, request.page_token)
        return memory_pb2.ListMemoriesResponse(memories=[memory_message(r) for r in rows], next_page_token=token)

    async def DeleteMemory(self, request: memory_pb2.DeleteMemoryRequest, context: grpc.aio.ServicerContext):
        await self._memories.delete(current_principal().user_id, request.memory_id)
        return memory_pb2.DeleteMemoryResponse()

    async def DeleteAllMemories(self, request: memory_pb2.DeleteAllMemoriesRequest, context: grpc.aio.ServicerContext):
        deleted = await self._memories.delete_all(current_principal().user_id)
        return memory_pb2.DeleteAllMemoriesResponse(deleted_count=deleted)
