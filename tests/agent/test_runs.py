"""Runs that outlive the connection: resume after a disconnect, background runs, cancel by
id from another replica, double-texting strategies, replicas that die or drain, event
retention, and the per-user limit on runs in flight.

Two agent replicas of this module share the mesh's database and use model names of
their own, so faults injected into the offline LLM reach only them.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator

import grpc
import httpx
import pytest

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from tests.agent.conftest import NewSession, StartAgent, assert_alternating, kinds, offline_stats
from tests.support.grpc_errors import rpc_failure
from tests.support.users import MeshUser
from tests.support.waiting import eventually

MODEL = "runs-test-model"
REPLICA_SETTINGS = {"LLM_MODELS": MODEL, "MEMORY_ENABLED": "false", "RUN_LEASE_S": "2"}


@pytest.fixture(scope="module")
def replicas(mesh: Mesh) -> Iterator[tuple[ChildProcess, ChildProcess]]:
    first = mesh.start_service("agent", instance="-runs-a", **REPLICA_SETTINGS)
    second = mesh.start_service("agent", instance="-runs-b", **REPLICA_SETTINGS)
    yield first, second
    first.stop()
    second.stop()


@pytest.fixture
async def stubs(
    replicas: tuple[ChildProcess, ChildProcess],
) -> AsyncIterator[tuple[agent_pb2_grpc.AgentServiceStub, agent_pb2_grpc.AgentServiceStub]]:
    async with grpc.aio.insecure_channel(replicas[0].addr) as a, grpc.aio.insecure_channel(replicas[1].addr) as b:
        yield agent_pb2_grpc.AgentServiceStub(a), agent_pb2_grpc.AgentServiceStub(b)


async def stall(control: httpx.AsyncClient, *, after_tokens: int, count: int = 1, model: str = MODEL) -> None:
    fault = {"model": model, "kind": "stall", "stall_s": 20, "after_tokens": after_tokens, "count": count}
    response = await control.post("/_offline/faults", json=fault)
    assert response.status_code == 200, response.text


def message(content: str) -> agent_pb2.Message:
    return agent_pb2.Message(role="user", content=content)


async def create_run(
    stub: agent_pb2_grpc.AgentServiceStub,
    user: MeshUser,
    session_id: str,
    content: str,
    strategy: int = agent_pb2.MULTITASK_STRATEGY_UNSPECIFIED,
) -> agent_pb2.Run:
    request = agent_pb2.CreateRunRequest(session_id=session_id, message=message(content), multitask_strategy=strategy)
    return (await stub.CreateRun(request, metadata=user.metadata, timeout=10)).run


async def get_run(stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, session_id: str, run_id: str) -> agent_pb2.Run:
    request = agent_pb2.GetRunRequest(session_id=session_id, run_id=run_id)
    return (await stub.GetRun(request, metadata=user.metadata, timeout=10)).run


async def until_status(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, session_id: str, run_id: str, *statuses: int
) -> agent_pb2.Run:
    async def check() -> agent_pb2.Run:
        run = await get_run(stub, user, session_id, run_id)
        assert run.status in statuses, agent_pb2.RunStatus.Name(run.status)
        return run

    return await eventually(check, timeout_s=30, interval_s=0.1)


async def follow(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, session_id: str, run_id: str, after_seq: int = 0
) -> list[agent_pb2.ChatEvent]:
    request = agent_pb2.StreamRunRequest(session_id=session_id, run_id=run_id, after_seq=after_seq)
    return [event async for event in stub.StreamRun(request, metadata=user.metadata, timeout=60)]


async def history(stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, session_id: str) -> list[agent_pb2.Message]:
    request = agent_pb2.GetHistoryRequest(session_id=session_id)
    return list((await stub.GetHistory(request, metadata=user.metadata, timeout=10)).messages)


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
    await eventually(lambda: _has_tokens(b, user, session_id, run.run_id, 2), timeout_s=30)

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


async def _has_tokens(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, session_id: str, run_id: str, count: int
) -> None:
    run = await get_run(stub, user, session_id, run_id)
    assert run.status == agent_pb2.RUN_STATUS_RUNNING
    # started + `count` tokens stored (events are written every few ms).
    assert run.last_seq >= 1 + count, run.last_seq


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
    await eventually(lambda: _has_tokens(a, user, session_id, first.run_id, 2), timeout_s=30)

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


async def test_two_replicas_execute_each_of_twenty_runs_once(
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, ...],
    llm_control: httpx.AsyncClient,
    user: MeshUser,
    new_session: NewSession,
) -> None:
    sessions = [await new_session(user) for _ in range(4)]
    created: list[tuple[str, agent_pb2.Run]] = []
    for index in range(20):
        session_id = sessions[index % 4]
        stub = stubs[index % 2]
        run = await _create_with_quota_room(stub, user, session_id, f"hello number {index}")
        created.append((session_id, run))

    for session_id, run in created:
        await until_status(stubs[0], user, session_id, run.run_id, agent_pb2.RUN_STATUS_SUCCEEDED)
    for session_id, run in created:
        events = await follow(stubs[1], user, session_id, run.run_id)
        assert kinds(events).count("started") == 1 and kinds(events)[-1] == "completed"

    async def counted() -> int:
        requests = (await offline_stats(llm_control))["requests_by_model"][MODEL]
        assert requests >= 20  # the server counts a request once its response has ended
        return int(requests)

    assert await eventually(counted, timeout_s=10) == 20


async def _create_with_quota_room(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, session_id: str, content: str
) -> agent_pb2.Run:
    """ENQUEUE, waiting while the user is at MAX_ACTIVE_RUNS_PER_USER (4 by default)."""
    for _ in range(600):
        try:
            return await create_run(stub, user, session_id, content, agent_pb2.MULTITASK_STRATEGY_ENQUEUE)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            await asyncio.sleep(0.05)
    raise AssertionError("the user's runs never made room")


async def test_runs_in_flight_per_user_are_limited_across_replicas(
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, ...],
    llm_control: httpx.AsyncClient,
    user: MeshUser,
    other_user: MeshUser,
    new_session: NewSession,
) -> None:
    a, b = stubs
    await stall(llm_control, after_tokens=1, count=4)
    runs = [
        (session_id, await create_run((a, b)[i % 2], user, session_id, "tell me a story"))
        for i, session_id in enumerate([await new_session(user) for _ in range(4)])
    ]

    refused = await rpc_failure(create_run(b, user, await new_session(user), "one more"))

    assert refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert refused.reason == "ACTIVE_RUNS_QUOTA_EXCEEDED"
    # Another user is not affected.
    await create_run(a, other_user, await new_session(other_user), "hello")
    for session_id, run in runs:
        await b.CancelRun(
            agent_pb2.CancelRunRequest(session_id=session_id, run_id=run.run_id), metadata=user.metadata, timeout=30
        )


async def test_run_of_a_killed_replica_fails_within_the_lease_and_keeps_what_it_said(
    start_agent: StartAgent,
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, ...],
    llm_control: httpx.AsyncClient,
    user: MeshUser,
    new_session: NewSession,
) -> None:
    survivor = stubs[1]
    doomed = await start_agent("-runs-doomed", **REPLICA_SETTINGS)
    session_id = await new_session(user)
    await stall(llm_control, after_tokens=2)
    async with grpc.aio.insecure_channel(doomed.addr) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        run = await create_run(stub, user, session_id, "tell me a long story")
        await eventually(lambda: _has_tokens(survivor, user, session_id, run.run_id, 2), timeout_s=30)
        doomed.signal(signal.SIGKILL)

    failed = await until_status(survivor, user, session_id, run.run_id, agent_pb2.RUN_STATUS_FAILED)

    assert failed.error.reason == "RUN_LOST"
    events = await follow(survivor, user, session_id, run.run_id)
    assert kinds(events)[-1] == "error" and events[-1].error.reason == "RUN_LOST"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    kept = await history(survivor, user, session_id)
    assert (kept[0].content, kept[0].interrupted) == ("tell me a long story", False)
    assert kept[1].interrupted and kept[1].content
    # The session is free again.
    after = await create_run(survivor, user, session_id, "hello again")
    await until_status(survivor, user, session_id, after.run_id, agent_pb2.RUN_STATUS_SUCCEEDED)


async def test_sigterm_under_streaming_load_ends_every_stream_and_leaves_no_run_running(
    start_agent: StartAgent,
    stubs: tuple[agent_pb2_grpc.AgentServiceStub, ...],
    llm_control: httpx.AsyncClient,
    user: MeshUser,
    other_user: MeshUser,
    new_session: NewSession,
) -> None:
    draining = await start_agent("-runs-drain", **REPLICA_SETTINGS, SHUTDOWN_GRACE_S="4")
    # Two of the four turns stall past the grace period; two finish in time.
    await stall(llm_control, after_tokens=1, count=2)
    owners = [user, user, other_user, other_user]
    sessions = [await new_session(owner) for owner in owners]
    async with grpc.aio.insecure_channel(draining.addr) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        calls = [
            stub.StreamChat(
                agent_pb2.StreamChatRequest(session_id=session_id, message=message("tell me a story")),
                metadata=owner.metadata,
                timeout=60,
            )
            for owner, session_id in zip(owners, sessions, strict=True)
        ]
        firsts = [await call.read() for call in calls]
        draining.signal(signal.SIGTERM)
        endings = await asyncio.gather(*(_last_event(call) for call in calls))

    assert all(kind in ("completed", "error") for kind in endings), endings
    assert endings.count("error") >= 1
    for owner, session_id, first in zip(owners, sessions, firsts, strict=True):
        run = await get_run(stubs[0], owner, session_id, first.run_id)
        assert run.status in (agent_pb2.RUN_STATUS_SUCCEEDED, agent_pb2.RUN_STATUS_FAILED)


async def _last_event(call: grpc.aio.UnaryStreamCall) -> str:
    last = ""
    try:
        while (event := await call.read()) is not grpc.aio.EOF:
            last = str(event.WhichOneof("event"))
    except grpc.aio.AioRpcError:
        pass  # a failed run ends its stream with an error status after its error event
    return last


async def test_events_of_finished_runs_are_pruned_after_their_ttl(
    start_agent: StartAgent, user: MeshUser, new_session: NewSession
) -> None:
    pruning = await start_agent("-runs-ttl", **REPLICA_SETTINGS, RUN_EVENTS_TTL_S="1")
    session_id = await new_session(user)
    async with grpc.aio.insecure_channel(pruning.addr) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        run = await create_run(stub, user, session_id, "hello")
        done = await until_status(stub, user, session_id, run.run_id, agent_pb2.RUN_STATUS_SUCCEEDED)
        assert len(await follow(stub, user, session_id, run.run_id)) == done.last_seq > 2

        async def pruned() -> list[agent_pb2.ChatEvent]:
            events = await follow(stub, user, session_id, run.run_id)
            assert len(events) == 1
            return events

        events = await eventually(pruned, timeout_s=20, interval_s=0.5)
    # The run record says how it ended, under its last sequence number.
    assert kinds(events) == ["completed"] and events[0].seq == done.last_seq
    assert events[0].completed.message.content == done.output.content
