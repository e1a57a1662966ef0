"""Memory's model calls go through the mesh's one LLM client: with LLM_MODELS and no
EXTRACTION_MODEL, a failing primary falls back to the next model, and once its circuit is
open it is skipped (before, memory called the primary alone and answered UNAVAILABLE)."""

from __future__ import annotations

import uuid

import grpc
import httpx

from agentmesh.memory.v1 import memory_pb2_grpc
from meshctl.mesh import Mesh
from tests.support.memory import add_messages, inject_llm_fault, start_replica
from tests.support.users import MeshUser


def requests_for(mesh: Mesh, model: str) -> int:
    stats = httpx.get(mesh.llm_url.removesuffix("/v1") + "/_offline/stats", timeout=5).json()
    return int(stats["requests_by_model"].get(model, 0))


async def test_a_failing_primary_falls_back_and_its_circuit_opens(mesh: Mesh, user: MeshUser) -> None:
    broken = f"offline-broken-{uuid.uuid4().hex[:8]}"
    inject_llm_fault(mesh, model=broken, kind="500", count=-1)
    replica = start_replica(
        mesh,
        "-fallback",
        LLM_MODELS=f"{broken},offline-small",
        LLM_MAX_ATTEMPTS="2",
        LLM_BACKOFF_BASE_S="0.01",
        LLM_CIRCUIT_FAILURE_THRESHOLD="1",
        LLM_CIRCUIT_COOLDOWN_S="300",
    )
    try:
        async with grpc.aio.insecure_channel(replica.addr) as channel:
            stub = memory_pb2_grpc.MemoryServiceStub(channel)
            first = await add_messages(stub, user, "I live in Lisbon")
            after_first = requests_for(mesh, broken)
            second = await add_messages(stub, user, "I love sailing")
            after_second = requests_for(mesh, broken)
    finally:
        replica.stop()

    assert [e.memory.text for e in first] == ["Lives in Lisbon"]
    assert [e.memory.text for e in second] == ["Loves sailing"]
    assert after_first == 2  # LLM_MAX_ATTEMPTS on the primary, then offline-small answered
    assert after_second == after_first  # its circuit is open: skipped without a call
