"""Memory lifecycle: UpdateMemory, change history, the session filter, expiry and the
default minimum search score.

Before: memories could only be added or deleted, resolution's ADD/UPDATE/DELETE events
were returned once and forgotten, nothing expired, ListMemories could not filter by
session, and search returned every hit down to score 0.0.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask
from google.protobuf.timestamp_pb2 import Timestamp

from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from tests.support.grpc_errors import rpc_failure
from tests.support.memory import add_messages, list_texts
from tests.support.users import MeshUser
from tests.support.waiting import eventually

ADD, UPDATE, DELETE = memory_pb2.MemoryEvent.ADD, memory_pb2.MemoryEvent.UPDATE, memory_pb2.MemoryEvent.DELETE
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def at(seconds: float) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(datetime.now(UTC) + timedelta(seconds=seconds))
    return value


async def add_facts(stub, user: MeshUser, *facts: str, **fields) -> list[memory_pb2.MemoryEvent]:
    request = memory_pb2.AddMemoriesRequest(facts=list(facts), **fields)
    return list((await stub.AddMemories(request, metadata=user.metadata)).events)


async def history(stub, user: MeshUser, memory_id: str) -> list[tuple[int, str, str, str]]:
    response = await stub.GetMemoryHistory(
        memory_pb2.GetMemoryHistoryRequest(memory_id=memory_id), metadata=user.metadata
    )
    return [(e.event, e.text, e.previous_text, e.source) for e in response.entries]


@pytest.fixture
async def db(mesh: Mesh) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(mesh.env["DATABASE_URL"])
    yield conn
    await conn.close()


@pytest.fixture(scope="module")
def idle_sweeper(mesh: Mesh) -> Iterator[ChildProcess]:
    replica = mesh.start_service("memory", instance="-nosweep", MEMORY_SWEEP_INTERVAL_S="3600")
    yield replica
    replica.stop()


@pytest.fixture(scope="module")
def busy_sweeper(mesh: Mesh) -> Iterator[ChildProcess]:
    replica = mesh.start_service("memory", instance="-sweep", MEMORY_SWEEP_INTERVAL_S="0.2")
    yield replica
    replica.stop()


async def test_update_memory_text_and_its_history(memory_stub, user: MeshUser, other_user: MeshUser) -> None:
    (added,) = await add_facts(memory_stub, user, "Drinks green tea")
    memory_id = added.memory.memory_id

    updated = await memory_stub.UpdateMemory(
        memory_pb2.UpdateMemoryRequest(
            memory_id=memory_id,
            memory=memory_pb2.Memory(text="Drinks black coffee"),
            update_mask=FieldMask(paths=["text"]),
        ),
        metadata=user.metadata,
    )
    found = await memory_stub.SearchMemories(
        memory_pb2.SearchMemoriesRequest(query="coffee", limit=1), metadata=user.metadata
    )

    assert (updated.memory.memory_id, updated.memory.text) == (memory_id, "Drinks black coffee")
    assert found.results[0].memory.memory_id == memory_id
    assert await history(memory_stub, user, memory_id) == [
        (ADD, "Drinks green tea", "", "add_memories"),
        (UPDATE, "Drinks black coffee", "Drinks green tea", "update_memory"),
    ]

    (other,) = await add_facts(memory_stub, user, "Owns a kayak")
    failures = {
        "mask": memory_pb2.UpdateMemoryRequest(
            memory_id=memory_id, memory=memory_pb2.Memory(text="x"), update_mask=FieldMask(paths=["session_id"])
        ),
        "empty": memory_pb2.UpdateMemoryRequest(memory_id=memory_id, memory=memory_pb2.Memory()),
        "duplicate": memory_pb2.UpdateMemoryRequest(
            memory_id=other.memory.memory_id, memory=memory_pb2.Memory(text="drinks black coffee")
        ),
        "upper": memory_pb2.UpdateMemoryRequest(memory_id=memory_id.upper(), memory=memory_pb2.Memory(text="y")),
    }
    expected = {
        "mask": (INVALID, "UPDATE_MASK_INVALID"),
        "empty": (INVALID, "UPDATE_MASK_EMPTY"),
        "duplicate": (grpc.StatusCode.ALREADY_EXISTS, "MEMORY_ALREADY_EXISTS"),
        "upper": (INVALID, "MEMORY_ID_INVALID"),
    }
    for name, request in failures.items():
        failure = await rpc_failure(memory_stub.UpdateMemory(request, metadata=user.metadata))
        assert (failure.code, failure.reason) == expected[name], name
    theirs = await rpc_failure(
        memory_stub.UpdateMemory(
            memory_pb2.UpdateMemoryRequest(memory_id=memory_id, memory=memory_pb2.Memory(text="mine now")),
            metadata=other_user.metadata,
        )
    )
    assert (theirs.code, theirs.reason) == (grpc.StatusCode.NOT_FOUND, "MEMORY_NOT_FOUND")
    not_theirs = await rpc_failure(
        memory_stub.GetMemoryHistory(
            memory_pb2.GetMemoryHistoryRequest(memory_id=memory_id), metadata=other_user.metadata
        )
    )
    assert not_theirs.code == grpc.StatusCode.NOT_FOUND


async def test_history_keeps_resolution_events_and_delete_erases_it(memory_stub, user: MeshUser) -> None:
    (paris,) = await add_messages(memory_stub, user, "I live in Paris")
    (berlin,) = await add_messages(memory_stub, user, "I moved to Berlin")
    (retracted,) = await add_messages(memory_stub, user, "I no longer live in Berlin")
    memory_id = paris.memory.memory_id

    assert (berlin.event, berlin.memory.memory_id, retracted.event) == (UPDATE, memory_id, DELETE)
    assert await list_texts(memory_stub, user) == []
    # The retracted memory is gone; its history is not.
    assert await history(memory_stub, user, memory_id) == [
        (ADD, "Lives in Paris", "", "add_memories"),
        (UPDATE, "Lives in Berlin", "Lives in Paris", "add_memories"),
        (DELETE, "Lives in Berlin", "", "add_memories"),
    ]

    (kept,) = await add_facts(memory_stub, user, "Collects vinyl")
    await memory_stub.DeleteMemory(
        memory_pb2.DeleteMemoryRequest(memory_id=kept.memory.memory_id), metadata=user.metadata
    )
    erased = await rpc_failure(
        memory_stub.GetMemoryHistory(
            memory_pb2.GetMemoryHistoryRequest(memory_id=kept.memory.memory_id), metadata=user.metadata
        )
    )
    assert (erased.code, erased.reason) == (grpc.StatusCode.NOT_FOUND, "MEMORY_NOT_FOUND")


async def test_list_memories_by_session(memory_stub, user: MeshUser) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    await add_facts(memory_stub, user, "Runs marathons", session_id=first)
    await add_facts(memory_stub, user, "Bakes bread", "Reads poetry", session_id=second)
    await add_facts(memory_stub, user, "Knits scarves")

    def texts(response: memory_pb2.ListMemoriesResponse) -> list[str]:
        return sorted(m.text for m in response.memories)

    only_second = await memory_stub.ListMemories(
        memory_pb2.ListMemoriesRequest(session_id=second), metadata=user.metadata
    )
    paged = await memory_stub.ListMemories(
        memory_pb2.ListMemoriesRequest(session_id=second, page_size=1), metadata=user.metadata
    )
    rest = await memory_stub.ListMemories(
        memory_pb2.ListMemoriesRequest(session_id=second, page_size=1, page_token=paged.next_page_token),
        metadata=user.metadata,
    )
    everything = await memory_stub.ListMemories(memory_pb2.ListMemoriesRequest(), metadata=user.metadata)
    bad = await rpc_failure(
        memory_stub.ListMemories(memory_pb2.ListMemoriesRequest(session_id=second.upper()), metadata=user.metadata)
    )

    assert texts(only_second) == ["Bakes bread", "Reads poetry"]
    assert sorted([*texts(paged), *texts(rest)]) == ["Bakes bread", "Reads poetry"]
    assert not rest.next_page_token
    assert len(everything.memories) == 4
    assert (bad.code, bad.reason) == (INVALID, "SESSION_ID_INVALID")


async def test_expired_memories_are_skipped_at_once(idle_sweeper, db, user: MeshUser) -> None:
    async with grpc.aio.insecure_channel(idle_sweeper.addr) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        (brief,) = await add_facts(stub, user, "Is visiting Rome", expire_time=at(1))
        (kept,) = await add_facts(stub, user, "Is visiting friends", expire_time=at(3600))
        assert brief.memory.HasField("expire_time")

        async def gone() -> None:
            listed = await list_texts(stub, user)
            found = await stub.SearchMemories(
                memory_pb2.SearchMemoriesRequest(query="visiting Rome", min_score=0), metadata=user.metadata
            )
            assert listed == ["Is visiting friends"]
            assert [r.memory.text for r in found.results] == ["Is visiting friends"]

        await eventually(gone, timeout_s=10, interval_s=0.2)
        # Not swept yet (this replica sweeps hourly): skipped all the same.
        row = await db.fetchval("SELECT count(*) FROM memory.memories WHERE id = $1", uuid.UUID(brief.memory.memory_id))
        assert row == 1
        # Adding the same fact again is a new memory, not a NOOP against the expired one.
        (again,) = await add_facts(stub, user, "Is visiting Rome")
        assert again.event == ADD
        assert kept.memory.expire_time.ToDatetime(tzinfo=UTC) > datetime.now(UTC)

        past = await rpc_failure(
            stub.AddMemories(memory_pb2.AddMemoriesRequest(facts=["x y"], expire_time=at(-5)), metadata=user.metadata)
        )
        assert (past.code, past.reason) == (INVALID, "EXPIRE_TIME_INVALID")


async def test_sweeper_deletes_expired_memories_with_their_history(busy_sweeper, db, user: MeshUser) -> None:
    async with grpc.aio.insecure_channel(busy_sweeper.addr) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        (brief,) = await add_facts(stub, user, "Is at a conference", expire_time=at(0.5))
        (kept,) = await add_facts(stub, user, "Likes conferences")
    memory_id = uuid.UUID(brief.memory.memory_id)

    async def swept() -> None:
        assert await db.fetchval("SELECT count(*) FROM memory.memories WHERE id = $1", memory_id) == 0
        assert await db.fetchval("SELECT count(*) FROM memory.memory_history WHERE memory_id = $1", memory_id) == 0

    await eventually(swept, timeout_s=20, interval_s=0.2)
    kept_id = uuid.UUID(kept.memory.memory_id)
    assert await db.fetchval("SELECT count(*) FROM memory.memory_history WHERE memory_id = $1", kept_id) == 1


async def test_search_skips_noise_unless_asked(memory_stub, user: MeshUser) -> None:
    await add_facts(memory_stub, user, "Plays the cello", "Works at a bank")

    default = await memory_stub.SearchMemories(memory_pb2.SearchMemoriesRequest(query="hello"), metadata=user.metadata)
    everything = await memory_stub.SearchMemories(
        memory_pb2.SearchMemoriesRequest(query="hello", min_score=0), metadata=user.metadata
    )
    relevant = await memory_stub.SearchMemories(
        memory_pb2.SearchMemoriesRequest(query="cello lessons"), metadata=user.metadata
    )

    assert list(default.results) == []
    assert len(everything.results) == 2
    assert all(r.score < 0.25 for r in everything.results)
    assert [r.memory.text for r in relevant.results] == ["Plays the cello"]


async def test_a_redelivered_add_changes_nothing(memory_stub, user: MeshUser, other_user: MeshUser) -> None:
    key = str(uuid.uuid4())
    first = await add_facts(memory_stub, user, "Lives in Oslo", idempotency_key=key)
    (moved,) = await add_facts(memory_stub, user, "Lives in Bergen")
    # The first call delivered again (its answer was lost): not applied a second time,
    # so it neither re-adds Oslo nor undoes the later change.
    again = await add_facts(memory_stub, user, "Lives in Oslo", idempotency_key=key)
    theirs = await add_facts(memory_stub, other_user, "Lives in Oslo", idempotency_key=key)

    assert [e.event for e in first] == [ADD]
    assert again == []
    assert [e.event for e in theirs] == [ADD]
    assert sorted(await list_texts(memory_stub, user)) == ["Lives in Bergen", "Lives in Oslo"]
    assert moved.event == ADD
    bad = await rpc_failure(
        memory_stub.AddMemories(
            memory_pb2.AddMemoriesRequest(facts=["Likes tea"], idempotency_key="k" * 129), metadata=user.metadata
        )
    )
    assert (bad.code, bad.reason) == (INVALID, "IDEMPOTENCY_KEY_INVALID")
