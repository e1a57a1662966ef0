"""Runs that outlive the connection: resume after a disconnect, background runs, cancel by
id from another replica, and the double-texting strategies.

Two agent replicas of this module (the `replicas` fixture) share the mesh's database and use
model names of their own, so faults injected into the offline LLM reach only them.
"""

from __future__ import annotations

import grpc
import httpx
import pytest

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from tests.support.agent import NewSession, assert_alternating, kinds
from tests.support.runs import (
    create_run,
    follow,
    get_run,
    has_tokens,
    history,
    message,
    stall,
    until_status,
)
from tests.support.users import MeshUser
from tests.support.waiting import eventually


async def test_stream_resumed_on_another_replica_gets_every_event_once_in_order(
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, ...], user: MeshUser, new_session: NewSession
) -> None:
    a, b = stubs
    session_id = await new_session(user)
    call = a.StreamChat(
        agent_pb2.StreamChatRequest(session_id=session_id, message=message("tell me about the sea")),
        metadata=user.metadata,
    )
    seen = []
    async for event in call:
        seen.append(event)
        if len(seen) == 3:
            break
    call.cancel()  # the client goes away; the run goes on (ON_DISCONNECT_CONTINUE)

    rest = await follow(b, user, session_id, seen[0].run_id, after_seq=seen[-1].seq)

    events = seen + rest
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert {e.run_id for e in events} == {seen[0].run_id}
    assert kinds(events)[0] == "started" and kinds(events)[-1] == "completed"
    text = "".join(e.token.text for e in events if e.WhichOneof("event") == "token")
    assert text == events[-1].completed.message.content
    # Replaying the whole run from the start gives the same events.
    assert await follow(b, user, session_id, seen[0].run_id) == events


async def test_background_run_finishes_with_no_client_attached(
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, ...], user: MeshUser, new_session: NewSession
) -> None:
    a, b = stubs
    session_id = await new_session(user)

    created = await create_run(a, user, session_id, "My name is Grace")

    assert created.status in (agent_pb2.RUN_STATUS_PENDING, agent_pb2.RUN_STATUS_RUNNING)
    done = await until_status(b, user, session_id, created.run_id, agent_pb2.RUN_STATUS_SUCCEEDED)
    assert "Grace" in done.output.content
    assert done.input.content == "My name is Grace"
    assert done.end_time.ToDatetime() >= done.start_time.ToDatetime() >= done.create_time.ToDatetime()
    assert [m.content for m in await history(b, user, session_id)] == ["My name is Grace", done.output.content]
    listed = await b.ListRuns(agent_pb2.ListRunsRequest(session_id=session_id), metadata=user.metadata)
    assert [r.run_id for r in listed.runs] == [created.run_id]


@pytest.mark.parametrize("action", [agent_pb2.CANCEL_ACTION_INTERRUPT, agent_pb2.CANCEL_ACTION_ROLLBACK])
async def test_cancel_by_id_from_another_replica(
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, ...],
    llm_control: httpx.AsyncClient,
    user: MeshUser,
    new_session: NewSession,
    action: int,
) -> None:
    a, b = stubs
    session_id = await new_session(user)
    await stall(llm_control, after_tokens=2)
    run = await create_run(a, user, session_id, "tell me a long story")
    await eventually(lambda: has_tokens(b, user, session_id, run.run_id, 2), timeout_s=30)

    cancelled = (
        await b.CancelRun(
            agent_pb2.CancelRunRequest(session_id=session_id, run_id=run.run_id, action=action),
            metadata=user.metadata,
            timeout=30,
        )
    ).run

    assert cancelled.status == agent_pb2.RUN_STATUS_CANCELLED
    events = await follow(a, user, session_id, run.run_id)
    assert kinds(events)[-1] == "error" and events[-1].error.code == grpc.StatusCode.CANCELLED.value[0]
    kept = await history(a, user, session_id)
    if action == agent_pb2.CANCEL_ACTION_INTERRUPT:
        partial = "".join(e.token.text for e in events if e.WhichOneof("event") == "token")
        assert [(m.role, m.content, m.interrupted) for m in kept] == [
            ("user", "tell me a long story", False),
            ("assistant", partial, True),
        ]
        assert partial
    else:
        assert kept == []


async def test_enqueued_runs_both_succeed_in_arrival_order(
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, ...],
    llm_control: httpx.AsyncClient,
    user: MeshUser,
    new_session: NewSession,
) -> None:
    a, b = stubs
    session_id = await new_session(user)
    first = await create_run(a, user, session_id, "My name is Ada")

    second = await create_run(b, user, session_id, "what is my name?", agent_pb2.MULTITASK_STRATEGY_ENQUEUE)
    third = await create_run(a, user, session_id, "and again?", agent_pb2.MULTITASK_STRATEGY_ENQUEUE)

    assert second.status in (agent_pb2.RUN_STATUS_PENDING, agent_pb2.RUN_STATUS_RUNNING)
    done = [
        await until_status(b, user, session_id, run.run_id, agent_pb2.RUN_STATUS_SUCCEEDED)
        for run in (first, second, third)
    ]
    assert done[0].end_time.ToDatetime() <= done[1].start_time.ToDatetime()
    assert done[1].end_time.ToDatetime() <= done[2].start_time.ToDatetime()
    assert "Ada" in done[1].output.content
    kept = await history(a, user, session_id)
    assert_alternating(kept)
    assert [m.content for m in kept][::2] == ["My name is Ada", "what is my name?", "and again?"]


@pytest.mark.parametrize("strategy", [agent_pb2.MULTITASK_STRATEGY_INTERRUPT, agent_pb2.MULTITASK_STRATEGY_ROLLBACK])
async def test_interrupt_and_rollback_replace_the_running_run(
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, ...],
    llm_control: httpx.AsyncClient,
    user: MeshUser,
    new_session: NewSession,
    strategy: int,
) -> None:
    a, b = stubs
    session_id = await new_session(user)
    await stall(llm_control, after_tokens=2)
    first = await create_run(a, user, session_id, "tell me a long story")
    await eventually(lambda: has_tokens(a, user, session_id, first.run_id, 2), timeout_s=30)

    events = [
        event
        async for event in b.StreamChat(
            agent_pb2.StreamChatRequest(session_id=session_id, message=message("hello"), multitask_strategy=strategy),
            metadata=user.metadata,
            timeout=60,
        )
    ]

    assert kinds(events)[-1] == "completed"
    assert (await get_run(a, user, session_id, first.run_id)).status == agent_pb2.RUN_STATUS_CANCELLED
    kept = await history(a, user, session_id)
    if strategy == agent_pb2.MULTITASK_STRATEGY_INTERRUPT:
        assert [(m.role, m.interrupted) for m in kept] == [
            ("user", False),
            ("assistant", True),
            ("user", False),
            ("assistant", False),
        ]
        assert kept[0].content == "tell me a long story" and kept[1].content
    else:
        assert [m.content for m in kept] == ["hello", events[-1].completed.message.content]
