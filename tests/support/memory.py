"""The memory service seen from tests: extra replicas, adding and listing memories, and
faults in the offline LLM it calls."""

from __future__ import annotations

import httpx

from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from tests.support.users import MeshUser


def start_replica(mesh: Mesh, instance: str, **env: str) -> ChildProcess:
    return mesh.start_service("memory", instance=instance, **env)


def inject_llm_fault(mesh: Mesh, **fault: object) -> None:
    """Adds a fault to the offline LLM server (its test-only `/_offline/faults` route)."""
    response = httpx.post(mesh.llm_url.removesuffix("/v1") + "/_offline/faults", json=fault, timeout=5)
    assert response.status_code == 200


async def add_messages(
    stub: memory_pb2_grpc.MemoryServiceStub, user: MeshUser, *contents: str, session_id: str = "", role: str = "user"
) -> list[memory_pb2.MemoryEvent]:
    request = memory_pb2.AddMemoriesRequest(
        messages=[memory_pb2.ConversationMessage(role=role, content=c) for c in contents], session_id=session_id
    )
    response = await stub.AddMemories(request, metadata=user.metadata, timeout=30)
    return list(response.events)


async def list_texts(stub: memory_pb2_grpc.MemoryServiceStub, user: MeshUser) -> list[str]:
    response = await stub.ListMemories(memory_pb2.ListMemoriesRequest(page_size=100), metadata=user.metadata)
    return [m.text for m in response.memories]
