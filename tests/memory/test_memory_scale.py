"""Many users in one table: searches never cross users, and the HNSW path keeps recall
against exact search with the same per-user filter."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections.abc import AsyncIterator

import pytest

from agentmesh.auth.v1 import auth_pb2_grpc
from agentmesh.memory.v1 import memory_pb2
from meshctl.mesh import Mesh
from services.memory.app import open_memory_store
from services.memory.embeddings import open_embedder
from services.memory.memory_rows import NewMemory
from services.memory.settings import MemorySettings
from services.memory.store import MemoryStore
from tests.support.users import MeshUser, register_user

USERS = 50
PER_USER = 200
COLOURS = ["red", "blue", "green", "yellow", "black", "white", "purple", "orange", "grey", "pink"]
THINGS = [
    "bicycles", "guitars", "teapots", "sneakers", "novels", "kites", "lamps", "umbrellas", "scarves", "boats",
    "clocks", "cameras", "tulips", "mugs", "jackets", "trains", "pianos", "maps", "robots", "lanterns",
]  # fmt: skip
FACTS = [f"Likes {colour} {thing}" for thing in THINGS for colour in COLOURS]


@pytest.fixture(scope="module")
async def loaded(mesh: Mesh, auth_stub_module) -> AsyncIterator[tuple[MemoryStore, list[MeshUser], MemorySettings]]:
    """50 users x 200 memories, loaded through the store's bulk insert (no LLM)."""
    settings = MemorySettings(database_url=mesh.env["DATABASE_URL"], llm_base_url=mesh.llm_url, app_env="test")
    database, store = await open_memory_store(settings)
    embedder = await open_embedder(settings)
    users = list(await asyncio.gather(*(register_user(auth_stub_module) for _ in range(USERS))))
    vectors = await embedder.embed(FACTS)
    await store.insert_many(
        [NewMemory(u.user_id, text, vector) for u in users for text, vector in zip(FACTS, vectors, strict=True)]
    )
    yield store, users, settings
    await embedder.close()
    for user in users:
        await store.delete_all(user.user_id)
    await database.close()


@pytest.fixture(scope="module")
async def auth_stub_module(mesh: Mesh) -> AsyncIterator[auth_pb2_grpc.AuthServiceStub]:
    import grpc

    async with grpc.aio.insecure_channel(mesh.addr("auth")) as channel:
        yield auth_pb2_grpc.AuthServiceStub(channel)


async def own_ids(stub, user: MeshUser) -> set[str]:
    ids, token = set(), ""
    while True:
        page = await stub.ListMemories(
            memory_pb2.ListMemoriesRequest(page_size=100, page_token=token), metadata=user.metadata
        )
        ids.update(m.memory_id for m in page.memories)
        token = page.next_page_token
        if not token:
            return ids


async def test_no_search_returns_another_users_memory(memory_stub, loaded) -> None:
    _store, users, _settings = loaded
    rng = random.Random(7)
    for user in users:
        owned = await own_ids(memory_stub, user)
        query = rng.choice(FACTS)
        response = await memory_stub.SearchMemories(
            memory_pb2.SearchMemoriesRequest(query=query, limit=100, min_score=0), metadata=user.metadata
        )

        assert len(owned) == PER_USER
        assert len(response.results) > 10
        assert response.results[0].memory.text == query
        assert {r.memory.memory_id for r in response.results} <= owned


async def test_filtered_search_keeps_recall_against_exact_search(loaded) -> None:
    store, users, settings = loaded
    embedder = await open_embedder(settings)
    rng = random.Random(11)
    queries = [f"{rng.choice(COLOURS)} {rng.choice(THINGS)} and {rng.choice(THINGS)}" for _ in range(100)]
    vectors = await embedder.embed(queries)
    await embedder.close()

    found, expected, timings = 0, 0, []
    for vector in vectors:
        user = rng.choice(users)
        started = time.perf_counter()
        hits = await store.search(user.user_id, vector, limit=10)
        timings.append(time.perf_counter() - started)
        exact = await store.exact_search(user.user_id, vector, limit=10)
        # Many facts tie on distance, so a hit counts when it is as close as the exact 10th.
        found += sum(1 for h in hits if h.score >= exact[-1].score - 1e-6)
        expected += len(exact)

    timings.sort()
    print(
        f"\nmemory search over {USERS * PER_USER} rows: recall@10={found / expected:.3f} "
        f"p50={statistics.median(timings) * 1e3:.2f}ms p95={timings[int(len(timings) * 0.95)] * 1e3:.2f}ms"
    )
    assert expected == 10 * len(vectors)
    assert found / expected >= 0.95
