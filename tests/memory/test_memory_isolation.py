"""One user's slow memory write never holds up another user's.

Before: `locked_user` took the advisory lock of the literal key "memory:{user_id}" (no
f-string), one lock for every user, so a write waiting on the LLM inside the lock (the
resolution call) queued every other user's write behind it, in every replica.
"""

from __future__ import annotations

import asyncio

import httpx

from agentmesh.memory.v1 import memory_pb2
from meshctl.mesh import Mesh
from tests.support.memory import add_messages, inject_llm_fault
from tests.support.users import MeshUser
from tests.support.waiting import eventually

STALL_S = 8.0


def chat_requests(mesh: Mesh) -> int:
    stats = httpx.get(mesh.llm_url.removesuffix("/v1") + "/_offline/stats", timeout=5).json()
    return int(stats["requests_by_endpoint"].get("chat.completions", 0))


async def test_a_slow_write_of_one_user_does_not_delay_another_user(
    memory_stub, mesh: Mesh, user: MeshUser, other_user: MeshUser
) -> None:
    await add_messages(memory_stub, user, "I live in Paris")
    before = chat_requests(mesh)
    # A's next write asks the model twice (extraction outside the lock, resolution inside
    # it); both answers are held back, so A sits inside its lock for STALL_S seconds.
    inject_llm_fault(mesh, model="offline-small", kind="stall", stall_s=STALL_S, count=2)
    slow = asyncio.create_task(add_messages(memory_stub, user, "I moved to Berlin"))

    async def resolving() -> None:
        assert chat_requests(mesh) >= before + 2 or slow.done(), "A's resolution call never reached the model"

    await eventually(resolving, timeout_s=20)
    assert chat_requests(mesh) >= before + 2, "A's resolution call never reached the model"
    assert not slow.done()

    quick = await memory_stub.AddMemories(
        memory_pb2.AddMemoriesRequest(facts=["Plays the cello"]), metadata=other_user.metadata, timeout=60
    )

    # B is stored while A still holds its lock waiting for the model.
    assert [e.event for e in quick.events] == [memory_pb2.MemoryEvent.ADD]
    assert not slow.done()
    events = await slow
    assert [(e.event, e.memory.text) for e in events] == [(memory_pb2.MemoryEvent.UPDATE, "Lives in Berlin")]
