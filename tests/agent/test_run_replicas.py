"""Runs across agent replicas: each run executed once, the per-user limit on runs in flight,
replicas that die or drain, and event retention. Resume, cancel and double-texting are in
test_runs.py.
"""

from __future__ import annotations

import asyncio
import signal

import grpc
import httpx

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from tests.support.agent import NewSession, StartAgent, kinds, offline_stats
from tests.support.grpc_errors import rpc_failure
from tests.support.runs import (
    MODEL,
    REPLICA_SETTINGS,
    create_run,
    create_with_quota_room,
    follow,
    get_run,
    has_tokens,
    history,
    last_event,
    message,
    stall,
    until_status,
)
from tests.support.users import MeshUser
from tests.support.waiting import eventually


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
        run = await create_with_quota_room(stub, user, session_id, f"hello number {index}")
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
        await eventually(lambda: has_tokens(survivor, user, session_id, run.run_id, 2), timeout_s=30)
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
        endings = await asyncio.gather(*(last_event(call) for call in calls))

    assert all(kind in ("completed", "error") for kind in endings), endings
    assert endings.count("error") >= 1
    for owner, session_id, first in zip(owners, sessions, firsts, strict=True):
        run = await get_run(stubs[0], owner, session_id, first.run_id)
        assert run.status in (agent_pb2.RUN_STATUS_SUCCEEDED, agent_pb2.RUN_STATUS_FAILED)


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
