"""Per-user quotas kept in Postgres, so every replica enforces the same count.

Before: nothing bounded how many sessions or memories one user could create.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from tests.support.grpc_errors import error_reason, rpc_failure
from tests.support.users import MeshUser

LIMIT = 3


@pytest.fixture(scope="module")
def limited_sessions(mesh: Mesh) -> Iterator[list[ChildProcess]]:
    replicas = [mesh.start_service("sessions", instance=f"-quota{i}", MAX_SESSIONS_PER_USER=str(LIMIT)) for i in (1, 2)]
    yield replicas
    for replica in replicas:
        replica.stop()


@pytest.fixture(scope="module")
def limited_memory(mesh: Mesh) -> Iterator[list[ChildProcess]]:
    replicas = [mesh.start_service("memory", instance=f"-quota{i}", MAX_MEMORIES_PER_USER=str(LIMIT)) for i in (1, 2)]
    yield replicas
    for replica in replicas:
        replica.stop()


@pytest.fixture
async def session_stubs(limited_sessions) -> AsyncIterator[list[sessions_pb2_grpc.SessionServiceStub]]:
    channels = [grpc.aio.insecure_channel(r.addr) for r in limited_sessions]
    yield [sessions_pb2_grpc.SessionServiceStub(c) for c in channels]
    for channel in channels:
        await channel.close()


@pytest.fixture
async def memory_stubs(limited_memory) -> AsyncIterator[list[memory_pb2_grpc.MemoryServiceStub]]:
    channels = [grpc.aio.insecure_channel(r.addr) for r in limited_memory]
    yield [memory_pb2_grpc.MemoryServiceStub(c) for c in channels]
    for channel in channels:
        await channel.close()


async def test_sessions_per_user_hold_across_replicas_and_races(session_stubs, user: MeshUser, other_user) -> None:
    async def create(index: int):
        stub = session_stubs[index % 2]
        try:
            await stub.CreateSession(sessions_pb2.CreateSessionRequest(name=f"s{index}"), metadata=user.metadata)
            return "created"
        except grpc.aio.AioRpcError as exc:
            return (exc.code(), error_reason(exc))

    results = await asyncio.gather(*(create(i) for i in range(8)))

    assert results.count("created") == LIMIT
    assert [r for r in results if r != "created"] == [
        (grpc.StatusCode.RESOURCE_EXHAUSTED, "SESSION_QUOTA_EXCEEDED")
    ] * (8 - LIMIT)
    listed = await session_stubs[0].ListSessions(sessions_pb2.ListSessionsRequest(), metadata=user.metadata)
    assert len(listed.sessions) == LIMIT
    # Another user has their own quota.
    await session_stubs[1].CreateSession(sessions_pb2.CreateSessionRequest(), metadata=other_user.metadata)


async def test_memories_per_user_all_or_nothing(memory_stubs, user: MeshUser) -> None:
    first, second = memory_stubs
    md = user.metadata
    await first.AddMemories(memory_pb2.AddMemoriesRequest(facts=["Has a dog", "Speaks Dutch"]), metadata=md)

    over = await rpc_failure(
        second.AddMemories(memory_pb2.AddMemoriesRequest(facts=["Plays chess", "Grows tomatoes"]), metadata=md)
    )
    listed = await second.ListMemories(memory_pb2.ListMemoriesRequest(), metadata=md)
    assert (over.code, over.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "MEMORY_QUOTA_EXCEEDED")
    assert sorted(m.text for m in listed.memories) == ["Has a dog", "Speaks Dutch"]

    last = await second.AddMemories(memory_pb2.AddMemoriesRequest(facts=["Plays chess"]), metadata=md)
    assert [e.event for e in last.events] == [memory_pb2.MemoryEvent.ADD]
    # At the quota, what adds nothing still works; a new fact does not.
    repeat = await first.AddMemories(memory_pb2.AddMemoriesRequest(facts=["has a dog"]), metadata=md)
    assert [e.event for e in repeat.events] == [memory_pb2.MemoryEvent.NOOP]
    full = await rpc_failure(first.AddMemories(memory_pb2.AddMemoriesRequest(facts=["Owns a boat"]), metadata=md))
    assert full.reason == "MEMORY_QUOTA_EXCEEDED"
    # Deleting one makes room again.
    await first.DeleteMemory(memory_pb2.DeleteMemoryRequest(memory_id=last.events[0].memory.memory_id), metadata=md)
    again = await second.AddMemories(memory_pb2.AddMemoriesRequest(facts=["Owns a boat"]), metadata=md)
    assert [e.event for e in again.events] == [memory_pb2.MemoryEvent.ADD]
