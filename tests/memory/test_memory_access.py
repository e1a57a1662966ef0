"""Search, list, delete and forget-me: always scoped to the caller, bad input refused."""

from __future__ import annotations

import uuid

import grpc
import pytest

from agentmesh.memory.v1 import memory_pb2
from tests.support.grpc_errors import error_reason
from tests.support.memory import add_messages, list_texts
from tests.support.users import MeshUser

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def add_facts(stub, user: MeshUser, *facts: str) -> list[memory_pb2.MemoryEvent]:
    response = await stub.AddMemories(memory_pb2.AddMemoriesRequest(facts=list(facts)), metadata=user.metadata)
    return list(response.events)


async def rpc_error(call) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    return failure.value


async def test_forget_me_leaves_nothing(memory_stub, user: MeshUser, other_user: MeshUser) -> None:
    await add_facts(memory_stub, user, "Lives in Lisbon", "Loves surfing", "Has a cat")
    await add_messages(memory_stub, user, "I work at Acme")
    await add_facts(memory_stub, other_user, "Loves surfing")

    response = await memory_stub.DeleteAllMemories(memory_pb2.DeleteAllMemoriesRequest(), metadata=user.metadata)
    search = await memory_stub.SearchMemories(
        memory_pb2.SearchMemoriesRequest(query="surfing", limit=100), metadata=user.metadata
    )
    again = await memory_stub.DeleteAllMemories(memory_pb2.DeleteAllMemoriesRequest(), metadata=user.metadata)

    assert response.deleted_count == 4
    assert await list_texts(memory_stub, user) == []
    assert list(search.results) == []
    assert again.deleted_count == 0
    assert await list_texts(memory_stub, other_user) == ["Loves surfing"]


async def test_delete_one_memory(memory_stub, user: MeshUser) -> None:
    events = await add_facts(memory_stub, user, "Has a dog", "Speaks Dutch")

    await memory_stub.DeleteMemory(
        memory_pb2.DeleteMemoryRequest(memory_id=events[0].memory.memory_id), metadata=user.metadata
    )
    error = await rpc_error(
        memory_stub.DeleteMemory(
            memory_pb2.DeleteMemoryRequest(memory_id=events[0].memory.memory_id), metadata=user.metadata
        )
    )

    assert await list_texts(memory_stub, user) == ["Speaks Dutch"]
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error_reason(error) == "MEMORY_NOT_FOUND"


async def test_another_users_memory_cannot_be_deleted(memory_stub, user: MeshUser, other_user: MeshUser) -> None:
    (event,) = await add_facts(memory_stub, other_user, "Is a nurse")

    error = await rpc_error(
        memory_stub.DeleteMemory(
            memory_pb2.DeleteMemoryRequest(memory_id=event.memory.memory_id), metadata=user.metadata
        )
    )

    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert await list_texts(memory_stub, other_user) == ["Is a nurse"]


@pytest.mark.parametrize(
    ("memory_id", "code", "reason"),
    [
        ("", INVALID, "MEMORY_ID_REQUIRED"),
        ("not-a-uuid", INVALID, "MEMORY_ID_INVALID"),
        (str(uuid.uuid4()), grpc.StatusCode.NOT_FOUND, "MEMORY_NOT_FOUND"),
    ],
)
async def test_delete_with_bad_id(memory_stub, user: MeshUser, memory_id: str, code, reason: str) -> None:
    error = await rpc_error(
        memory_stub.DeleteMemory(memory_pb2.DeleteMemoryRequest(memory_id=memory_id), metadata=user.metadata)
    )

    assert (error.code(), error_reason(error)) == (code, reason)


@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [
        ({"query": ""}, "QUERY_REQUIRED"),
        ({"query": "   "}, "QUERY_REQUIRED"),
        ({"query": "x" * 2001}, "QUERY_TOO_LONG"),
        ({"query": "hiking", "limit": -1}, "LIMIT_INVALID"),
        ({"query": "hiking", "limit": 101}, "LIMIT_INVALID"),
        ({"query": "hiking", "min_score": -0.1}, "MIN_SCORE_INVALID"),
        ({"query": "hiking", "min_score": 1.5}, "MIN_SCORE_INVALID"),
        ({"query": "hiking", "min_score": float("nan")}, "MIN_SCORE_INVALID"),
    ],
)
async def test_search_refuses_bad_input(memory_stub, user: MeshUser, request_fields: dict, reason: str) -> None:
    error = await rpc_error(
        memory_stub.SearchMemories(memory_pb2.SearchMemoriesRequest(**request_fields), metadata=user.metadata)
    )

    assert (error.code(), error_reason(error)) == (INVALID, reason)


async def test_search_limit_and_min_score(memory_stub, user: MeshUser) -> None:
    await add_facts(memory_stub, user, "Loves hiking", "Enjoys hiking trips", "Hiking boots are red", "Has a piano")

    two = await memory_stub.SearchMemories(
        memory_pb2.SearchMemoriesRequest(query="hiking", limit=2), metadata=user.metadata
    )
    strict = await memory_stub.SearchMemories(
        memory_pb2.SearchMemoriesRequest(query="hiking", min_score=0.99), metadata=user.metadata
    )
    everything = await memory_stub.SearchMemories(
        memory_pb2.SearchMemoriesRequest(query="piano"), metadata=user.metadata
    )

    assert len(two.results) == 2
    assert all("iking" in r.memory.text for r in two.results)
    assert two.results[0].score >= two.results[1].score
    assert list(strict.results) == []
    assert everything.results[0].memory.text == "Has a piano"
    assert all(0.0 <= r.score <= 1.0 for r in everything.results)


M = memory_pb2.ConversationMessage


@pytest.mark.parametrize(
    ("request_fields", "reason"),
    [
        ({}, "NOTHING_TO_ADD"),
        ({"facts": ["Likes tea"] * 51}, "TOO_MANY_FACTS"),
        ({"messages": [M(role="user", content="hi")] * 51}, "TOO_MANY_MESSAGES"),
        ({"facts": [""]}, "FACT_LENGTH_INVALID"),
        ({"facts": ["   "]}, "FACT_LENGTH_INVALID"),
        ({"facts": ["x" * 501]}, "FACT_LENGTH_INVALID"),
        ({"messages": [M(role="user", content="x" * 10_001)]}, "MESSAGE_TOO_LONG"),
        ({"messages": [M(role="wizard", content="I love hiking")]}, "MESSAGE_ROLE_INVALID"),
        ({"facts": ["Likes tea"], "session_id": "nope"}, "SESSION_ID_INVALID"),
    ],
)
async def test_add_refuses_bad_input(memory_stub, user: MeshUser, request_fields: dict, reason: str) -> None:
    error = await rpc_error(
        memory_stub.AddMemories(memory_pb2.AddMemoriesRequest(**request_fields), metadata=user.metadata)
    )

    assert (error.code(), error_reason(error)) == (INVALID, reason)
    assert await list_texts(memory_stub, user) == []


async def test_list_pages_newest_first(memory_stub, user: MeshUser) -> None:
    facts = [f"Likes the number {n}" for n in range(25)]
    for start in range(0, 25, 5):
        await add_facts(memory_stub, user, *facts[start : start + 5])

    pages, token = [], ""
    while True:
        response = await memory_stub.ListMemories(
            memory_pb2.ListMemoriesRequest(page_size=10, page_token=token), metadata=user.metadata
        )
        pages.append([m.text for m in response.memories])
        token = response.next_page_token
        if not token:
            break

    assert [len(page) for page in pages] == [10, 10, 5]
    assert [text for page in pages for text in page] == list(reversed(facts))


@pytest.mark.parametrize(
    ("page_size", "page_token", "reason"),
    [(101, "", "PAGE_SIZE_INVALID"), (-1, "", "PAGE_SIZE_INVALID"), (10, "garbage!", "PAGE_TOKEN_INVALID")],
)
async def test_list_refuses_bad_paging(memory_stub, user: MeshUser, page_size: int, page_token: str, reason: str):
    error = await rpc_error(
        memory_stub.ListMemories(
            memory_pb2.ListMemoriesRequest(page_size=page_size, page_token=page_token), metadata=user.metadata
        )
    )

    assert (error.code(), error_reason(error)) == (INVALID, reason)


async def test_calls_without_a_token_are_unauthenticated(memory_stub) -> None:
    error = await rpc_error(memory_stub.ListMemories(memory_pb2.ListMemoriesRequest()))

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
