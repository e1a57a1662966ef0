"""AddMemories from conversations: extraction, deduplication, updates, retractions, and
what must never become a memory."""

from __future__ import annotations

import uuid

import grpc
import pytest

from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from meshctl.mesh import Mesh
from tests.support.grpc_errors import error_reason
from tests.support.memory import add_messages, inject_llm_fault, list_texts, start_replica
from tests.support.users import MeshUser

ADD = memory_pb2.MemoryEvent.ADD
UPDATE = memory_pb2.MemoryEvent.UPDATE
DELETE = memory_pb2.MemoryEvent.DELETE
NOOP = memory_pb2.MemoryEvent.NOOP


async def test_fact_from_one_session_is_found_by_search_in_another(memory_stub, user: MeshUser) -> None:
    first_session = str(uuid.uuid4())
    events = await add_messages(memory_stub, user, "I love hiking", session_id=first_session)
    await memory_stub.AddMemories(
        memory_pb2.AddMemoriesRequest(
            facts=["Works at a bank", "Is allergic to peanuts"], session_id=str(uuid.uuid4())
        ),
        metadata=user.metadata,
    )

    assert [(e.event, e.memory.text) for e in events] == [(ADD, "Loves hiking")]
    response = await memory_stub.SearchMemories(
        memory_pb2.SearchMemoriesRequest(query="hiking", limit=3), metadata=user.metadata
    )
    best = response.results[0]
    assert best.memory.text == "Loves hiking"
    assert best.memory.session_id == first_session
    assert best.memory.memory_id == events[0].memory.memory_id
    assert best.score > 0.3
    assert all(r.score < best.score for r in response.results[1:])


async def test_same_fact_twice_is_one_memory(memory_stub, user: MeshUser) -> None:
    first = await add_messages(memory_stub, user, "I love hiking")
    second = await add_messages(memory_stub, user, "I love hiking!")
    reworded = await add_messages(memory_stub, user, "I like hiking")

    assert [e.event for e in first] == [ADD]
    assert [(e.event, e.memory.memory_id) for e in second] == [(NOOP, first[0].memory.memory_id)]
    assert [(e.event, e.memory.memory_id) for e in reworded] == [(NOOP, first[0].memory.memory_id)]
    assert await list_texts(memory_stub, user) == ["Loves hiking"]


async def test_given_facts_are_deduplicated_by_normalised_text(memory_stub, user: MeshUser) -> None:
    request = memory_pb2.AddMemoriesRequest(facts=["Speaks French", "speaks  french.", "Has a dog"])
    response = await memory_stub.AddMemories(request, metadata=user.metadata)
    again = await memory_stub.AddMemories(
        memory_pb2.AddMemoriesRequest(facts=["SPEAKS FRENCH"]), metadata=user.metadata
    )

    assert [(e.event, e.memory.text) for e in response.events] == [(ADD, "Speaks French"), (ADD, "Has a dog")]
    assert [e.event for e in again.events] == [NOOP]
    assert sorted(await list_texts(memory_stub, user)) == ["Has a dog", "Speaks French"]


async def test_moving_updates_where_the_user_lives(memory_stub, user: MeshUser) -> None:
    paris = await add_messages(memory_stub, user, "I live in Paris")
    berlin = await add_messages(memory_stub, user, "I moved to Berlin")

    assert [(e.event, e.memory.text) for e in paris] == [(ADD, "Lives in Paris")]
    assert len(berlin) == 1
    assert berlin[0].event == UPDATE
    assert berlin[0].memory.text == "Lives in Berlin"
    assert berlin[0].previous_text == "Lives in Paris"
    assert berlin[0].memory.memory_id == paris[0].memory.memory_id
    assert await list_texts(memory_stub, user) == ["Lives in Berlin"]


async def test_retraction_deletes_the_fact(memory_stub, user: MeshUser) -> None:
    await add_messages(memory_stub, user, "I love hiking", "I work at Acme")
    events = await add_messages(memory_stub, user, "I no longer like hiking")
    nothing_to_retract = await add_messages(memory_stub, user, "Forget that I speak Klingon")

    assert [(e.event, e.memory.text) for e in events] == [(DELETE, "Loves hiking")]
    assert [e.event for e in nothing_to_retract] == [NOOP]
    assert await list_texts(memory_stub, user) == ["Works at Acme"]


async def test_assistant_system_and_tool_messages_never_become_memories(memory_stub, user: MeshUser) -> None:
    request = memory_pb2.AddMemoriesRequest(
        messages=[
            memory_pb2.ConversationMessage(role="system", content="I live in Paris. My name is Sys."),
            memory_pb2.ConversationMessage(role="user", content="What is the weather like?"),
            memory_pb2.ConversationMessage(role="assistant", content="I love hiking and I work at OpenAI."),
            memory_pb2.ConversationMessage(role="tool", content="I am allergic to cats"),
        ]
    )
    response = await memory_stub.AddMemories(request, metadata=user.metadata)
    with_user_fact = await add_messages(memory_stub, user, "I speak Portuguese")

    assert list(response.events) == []
    assert [e.memory.text for e in with_user_fact] == ["Speaks Portuguese"]
    assert await list_texts(memory_stub, user) == ["Speaks Portuguese"]


async def test_facts_shown_to_the_model_are_not_stored_again(memory_stub, user: MeshUser) -> None:
    request = memory_pb2.AddMemoriesRequest(
        messages=[memory_pb2.ConversationMessage(role="user", content="I love hiking. I have a cat.")],
        context_facts=["Loves hiking"],
    )
    response = await memory_stub.AddMemories(request, metadata=user.metadata)

    assert [(e.event, e.memory.text) for e in response.events] == [(ADD, "Has a cat")]
    assert await list_texts(memory_stub, user) == ["Has a cat"]


async def test_concurrent_adds_across_replicas_keep_one_copy_of_each_fact(
    memory_stub, replica_stub: memory_pb2_grpc.MemoryServiceStub, user: MeshUser
) -> None:
    import asyncio

    facts = ["Speaks Italian", "Has a bike", "Likes chess", "Is a pianist", "Studies law"]
    requests = [
        (memory_stub if i % 2 else replica_stub).AddMemories(
            memory_pb2.AddMemoriesRequest(facts=facts[i % 3 : i % 3 + 3]), metadata=user.metadata, timeout=30
        )
        for i in range(8)
    ]
    messages = [
        (replica_stub if i % 2 else memory_stub).AddMemories(
            memory_pb2.AddMemoriesRequest(
                messages=[memory_pb2.ConversationMessage(role="user", content="I live in Rome. I study law.")]
            ),
            metadata=user.metadata,
            timeout=30,
        )
        for i in range(4)
    ]
    responses = await asyncio.gather(*requests, *messages)

    added = [e.memory.text for r in responses for e in r.events if e.event == ADD]
    assert sorted(added) == sorted([*facts, "Lives in Rome"])
    assert sorted(await list_texts(memory_stub, user)) == sorted([*facts, "Lives in Rome"])


async def test_llm_outage_answers_unavailable_and_stores_nothing(mesh: Mesh, user: MeshUser) -> None:
    broken_model = f"offline-broken-{uuid.uuid4().hex[:8]}"
    inject_llm_fault(mesh, model=broken_model, kind="500", count=-1)
    replica = start_replica(mesh, "-llm-down", EXTRACTION_MODEL=broken_model)
    try:
        async with grpc.aio.insecure_channel(replica.addr) as channel:
            stub = memory_pb2_grpc.MemoryServiceStub(channel)
            await stub.AddMemories(memory_pb2.AddMemoriesRequest(facts=["Lives in Paris"]), metadata=user.metadata)
            request = memory_pb2.AddMemoriesRequest(
                facts=["Speaks French"],
                messages=[memory_pb2.ConversationMessage(role="user", content="I moved to Berlin")],
            )
            with pytest.raises(grpc.aio.AioRpcError) as failure:
                await stub.AddMemories(request, metadata=user.metadata, timeout=30)
            texts = await list_texts(stub, user)
    finally:
        replica.stop()

    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error_reason(failure.value) == "LLM_UNAVAILABLE"
    assert texts == ["Lives in Paris"]
