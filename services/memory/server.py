"""agentmesh.memory.v1.MemoryService: every call scoped to the caller."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from runtime.erasure import erasure_request
from runtime.errors import InvalidArgument
from runtime.ids import acting_user_id
from runtime.principal import current_principal
from services.memory.memories import AddRequest, Memories
from services.memory.memory_rows import HistoryRow, MemoryRow
from services.memory.resolution import Outcome

EVENT_ACTIONS = {
    "ADD": memory_pb2.MemoryEvent.ADD,
    "UPDATE": memory_pb2.MemoryEvent.UPDATE,
    "DELETE": memory_pb2.MemoryEvent.DELETE,
    "NOOP": memory_pb2.MemoryEvent.NOOP,
}


UPDATABLE = ("text", "expire_time")


def memory_message(row: MemoryRow) -> memory_pb2.Memory:
    created, updated = Timestamp(), Timestamp()
    created.FromDatetime(row.created_at)
    updated.FromDatetime(row.updated_at)
    memory = memory_pb2.Memory(
        memory_id=row.id, text=row.text, session_id=row.session_id, created_at=created, updated_at=updated
    )
    if row.expire_time is not None:
        memory.expire_time.FromDatetime(row.expire_time)
    return memory


def history_message(row: HistoryRow) -> memory_pb2.MemoryHistoryEntry:
    created = Timestamp()
    created.FromDatetime(row.created_at)
    return memory_pb2.MemoryHistoryEntry(
        event=EVENT_ACTIONS[row.action],
        text=row.text,
        previous_text=row.previous_text,
        session_id=row.session_id,
        source=row.source,
        create_time=created,
    )


def time_of(value: Timestamp, field: str) -> datetime:
    try:
        return value.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(f"{field} is not a valid time", reason="EXPIRE_TIME_INVALID") from None


def memory_update(request: memory_pb2.UpdateMemoryRequest) -> tuple[str | None, bool, datetime | None]:
    """(new text or None, whether expire_time changes, the new expire_time) from the mask."""
    memory = request.memory
    if memory.memory_id and memory.memory_id != request.memory_id:
        raise InvalidArgument("memory.memory_id differs from memory_id", reason="MEMORY_ID_MISMATCH")
    paths = list(request.update_mask.paths)
    if not paths:
        paths = [
            p for p, is_set in (("text", bool(memory.text)), ("expire_time", memory.HasField("expire_time"))) if is_set
        ]
    if paths == ["*"]:
        paths = list(UPDATABLE)
    unknown = [p for p in paths if p not in UPDATABLE]
    if unknown:
        raise InvalidArgument(
            f"update_mask may name only {', '.join(UPDATABLE)} (or *), not {unknown[0]!r}",
            reason="UPDATE_MASK_INVALID",
            metadata={"path": unknown[0][:100]},
        )
    text = memory.text if "text" in paths else None
    set_expire = "expire_time" in paths
    expire_time = (
        time_of(memory.expire_time, "memory.expire_time") if set_expire and memory.HasField("expire_time") else None
    )
    return text, set_expire, expire_time


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
        idempotency_key=request.idempotency_key,
        expire_time=time_of(request.expire_time, "expire_time") if request.HasField("expire_time") else None,
    )


class MemoryServicer(memory_pb2_grpc.MemoryServiceServicer):
    def __init__(self, memories: Memories) -> None:
        self._memories = memories

    async def AddMemories(self, request: memory_pb2.AddMemoriesRequest, context: grpc.aio.ServicerContext):
        outcomes = await self._memories.add(acting_user_id(current_principal()), add_request(request))
        return memory_pb2.AddMemoriesResponse(events=[event_message(o) for o in outcomes])

    async def SearchMemories(self, request: memory_pb2.SearchMemoriesRequest, context: grpc.aio.ServicerContext):
        user_id = acting_user_id(current_principal())
        min_score = request.min_score if request.HasField("min_score") else None
        hits = await self._memories.search(user_id, request.query, request.limit, min_score)
        results = [memory_pb2.SearchResult(memory=memory_message(h.memory), score=h.score) for h in hits]
        return memory_pb2.SearchMemoriesResponse(results=results)

    async def ListMemories(self, request: memory_pb2.ListMemoriesRequest, context: grpc.aio.ServicerContext):
        rows, token = await self._memories.list(
            acting_user_id(current_principal()), request.page_size, request.page_token, request.session_id
        )
        return memory_pb2.ListMemoriesResponse(memories=[memory_message(r) for r in rows], next_page_token=token)

    async def UpdateMemory(self, request: memory_pb2.UpdateMemoryRequest, context: grpc.aio.ServicerContext):
        text, set_expire, expire_time = memory_update(request)
        row = await self._memories.update(
            acting_user_id(current_principal()),
            request.memory_id,
            text=text,
            set_expire=set_expire,
            expire_time=expire_time,
        )
        return memory_pb2.UpdateMemoryResponse(memory=memory_message(row))

    async def GetMemoryHistory(self, request: memory_pb2.GetMemoryHistoryRequest, context: grpc.aio.ServicerContext):
        rows, token = await self._memories.history(
            acting_user_id(current_principal()), request.memory_id, request.page_size, request.page_token
        )
        return memory_pb2.GetMemoryHistoryResponse(entries=[history_message(r) for r in rows], next_page_token=token)

    async def DeleteMemory(self, request: memory_pb2.DeleteMemoryRequest, context: grpc.aio.ServicerContext):
        await self._memories.delete(acting_user_id(current_principal()), request.memory_id)
        return memory_pb2.DeleteMemoryResponse()

    async def DeleteAllMemories(self, request: memory_pb2.DeleteAllMemoriesRequest, context: grpc.aio.ServicerContext):
        deleted = await self._memories.delete_all(acting_user_id(current_principal()))
        return memory_pb2.DeleteAllMemoriesResponse(deleted_count=deleted)

    async def EraseUserData(self, request: memory_pb2.EraseUserDataRequest, context: grpc.aio.ServicerContext):
        erasure = erasure_request(request)
        counts = await self._memories.erase_user(erasure.erasure_id, erasure.user_id)
        return memory_pb2.EraseUserDataResponse(counts=counts)
