"""Human in the loop: a tool call that needs approval pauses its run; a person approves,
rejects or edits it (or answers the model's question) on any replica, after any restart,
and the same run goes on."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import psycopg
import pytest

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from meshctl.mesh import Mesh, free_port
from meshctl.processes import ChildProcess
from tests.support.agent import NewSession, StartAgent, kinds
from tests.support.grpc_errors import rpc_failure
from tests.support.users import MeshUser
from tests.support.waiting import eventually

SETTINGS = {"TOOLS_REQUIRE_APPROVAL": "calculator", "MEMORY_ENABLED": "false", "RUN_LEASE_S": "3"}


@pytest.fixture(scope="module")
def approving_agent(mesh: Mesh) -> Iterator[ChildProcess]:
    child = mesh.start_service("agent", instance="-approvals", **SETTINGS)
    yield child
    child.stop()


@pytest.fixture
async def stub(approving_agent: ChildProcess) -> AsyncIterator[agent_pb2_grpc.AgentServiceStub]:
    async with grpc.aio.insecure_channel(approving_agent.addr) as channel:
        yield agent_pb2_grpc.AgentServiceStub(channel)


async def ask(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, session_id: str, content: str
) -> list[agent_pb2.ChatEvent]:
    request = agent_pb2.StreamChatRequest(
        session_id=session_id, message=agent_pb2.Message(role="user", content=content)
    )
    return [event async for event in stub.StreamChat(request, metadata=user.metadata, timeout=60)]


async def decide(
    stub: agent_pb2_grpc.AgentServiceStub,
    user: MeshUser,
    session_id: str,
    interrupt: agent_pb2.ChatEvent | agent_pb2.RunInterrupt,
    decision: int,
    *,
    run_id: str,
    arguments_json: str = "",
    answer: str = "",
) -> agent_pb2.Run:
    item = interrupt.interrupt if isinstance(interrupt, agent_pb2.ChatEvent) else interrupt
    request = agent_pb2.ResumeRunRequest(
        session_id=session_id,
        run_id=run_id,
        interrupt_id=item.interrupt_id,
        decision=decision,
        arguments_json=arguments_json,
        answer=answer,
    )
    return (await stub.ResumeRun(request, metadata=user.metadata, timeout=30)).run


async def rest_of_run(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, session_id: str, run_id: str, after_seq: int
) -> list[agent_pb2.ChatEvent]:
    request = agent_pb2.StreamRunRequest(session_id=session_id, run_id=run_id, after_seq=after_seq)
    return [event async for event in stub.StreamRun(request, metadata=user.metadata, timeout=60)]


def canonical_sha256(arguments: dict) -> str:
    return hashlib.sha256(json.dumps(arguments, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


async def test_calculator_call_pauses_the_run_with_its_call_and_hash_then_approve_answers(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, new_session: NewSession, mesh: Mesh
) -> None:
    session_id = await new_session(user)

    paused = await ask(stub, user, session_id, "what is 17*23")

    assert kinds(paused) == ["started", "tool_call", "interrupt"]
    interrupt = paused[-1].interrupt
    assert interrupt.kind == agent_pb2.INTERRUPT_KIND_TOOL_APPROVAL and interrupt.last
    assert interrupt.tool_call.name == "calculator"
    assert json.loads(interrupt.tool_call.arguments_json) == {"expression": "17*23"}
    assert interrupt.arguments_sha256 == canonical_sha256({"expression": "17*23"})
    run_id = paused[0].run_id
    run = (await stub.GetRun(agent_pb2.GetRunRequest(session_id=session_id, run_id=run_id), metadata=user.metadata)).run
    assert run.status == agent_pb2.RUN_STATUS_INTERRUPTED
    assert [i.interrupt_id for i in run.interrupts] == [interrupt.interrupt_id]

    await decide(stub, user, session_id, paused[-1], agent_pb2.DECISION_APPROVE, run_id=run_id)
    rest = await rest_of_run(stub, user, session_id, run_id, paused[-1].seq)

    events = paused + rest
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert "tool_result" in kinds(rest) and kinds(rest)[-1] == "completed"
    assert "391" in rest[-1].completed.message.content
    # A replay from the start goes past the pause to the end (one run, one stream of events).
    assert await rest_of_run(stub, user, session_id, run_id, 0) == events
    # The same decision again returns the run, changes nothing.
    again = await decide(stub, user, session_id, paused[-1], agent_pb2.DECISION_APPROVE, run_id=run_id)
    assert again.status == agent_pb2.RUN_STATUS_SUCCEEDED and again.run_id == run_id
    # A different decision now is refused.
    changed = await rpc_failure(decide(stub, user, session_id, paused[-1], agent_pb2.DECISION_REJECT, run_id=run_id))
    assert (changed.code, changed.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INTERRUPT_ALREADY_DECIDED")

    async def traced() -> list[dict]:
        async with await psycopg.AsyncConnection.connect(mesh.env["DATABASE_URL"]) as conn:
            row = await (
                await conn.execute("SELECT tool_calls FROM evals.traces WHERE trace_id = %s", (run_id,))
            ).fetchone()
        assert row is not None
        return row[0]

    calls = await eventually(traced, timeout_s=30, interval_s=0.25)
    assert [(c["name"], c["decision"]) for c in calls] == [("calculator", "approve")]


async def test_reject_runs_no_tool_and_the_answer_says_so(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, new_session: NewSession
) -> None:
    session_id = await new_session(user)
    paused = await ask(stub, user, session_id, "what is 17*23")

    await decide(stub, user, session_id, paused[-1], agent_pb2.DECISION_REJECT, run_id=paused[0].run_id)
    rest = await rest_of_run(stub, user, session_id, paused[0].run_id, paused[-1].seq)

    assert "tool_result" not in kinds(rest)
    assert "rejected" in rest[-1].completed.message.content and "391" not in rest[-1].completed.message.content


async def test_edit_runs_the_edited_arguments_and_is_recorded(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, new_session: NewSession
) -> None:
    session_id = await new_session(user)
    paused = await ask(stub, user, session_id, "what is 17*23")
    run_id = paused[0].run_id

    await decide(
        stub,
        user,
        session_id,
        paused[-1],
        agent_pb2.DECISION_EDIT,
        run_id=run_id,
        arguments_json='{"expression": "17*24"}',
    )
    rest = await rest_of_run(stub, user, session_id, run_id, paused[-1].seq)

    assert "408" in rest[-1].completed.message.content
    listed = await stub.ListRunDecisions(
        agent_pb2.ListRunDecisionsRequest(session_id=session_id, run_id=run_id), metadata=user.metadata
    )
    [decision] = listed.decisions
    assert decision.decision == agent_pb2.DECISION_EDIT
    assert json.loads(decision.edited_arguments_json) == {"expression": "17*24"}
    assert decision.decided_by == user.user_id and decision.decide_time.seconds > 0
    assert decision.interrupt.arguments_sha256 == canonical_sha256({"expression": "17*23"})


async def test_two_calls_in_one_round_are_presented_together_and_decided_one_by_one(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, new_session: NewSession
) -> None:
    session_id = await new_session(user)
    paused = await ask(stub, user, session_id, "what is 1+1; 2+2")
    interrupts = [e for e in paused if e.WhichOneof("event") == "interrupt"]
    assert [i.interrupt.last for i in interrupts] == [False, True]
    run_id = paused[0].run_id

    first = await decide(stub, user, session_id, interrupts[0], agent_pb2.DECISION_APPROVE, run_id=run_id)
    assert first.status == agent_pb2.RUN_STATUS_INTERRUPTED
    assert [i.interrupt_id for i in first.interrupts] == [interrupts[1].interrupt.interrupt_id]
    await decide(stub, user, session_id, interrupts[1], agent_pb2.DECISION_REJECT, run_id=run_id)
    rest = await rest_of_run(stub, user, session_id, run_id, paused[-1].seq)

    assert [e.tool_result.content for e in rest if e.WhichOneof("event") == "tool_result"] == ["2"]
    assert kinds(rest)[-1] == "completed"


async def test_a_question_to_the_user_is_answered(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, new_session: NewSession
) -> None:
    session_id = await new_session(user)
    paused = await ask(stub, user, session_id, "Please ask me my favourite colour first")
    question = paused[-1].interrupt
    assert question.kind == agent_pb2.INTERRUPT_KIND_QUESTION
    assert question.question == "What is your favourite colour?"

    wrong = await rpc_failure(
        decide(stub, user, session_id, paused[-1], agent_pb2.DECISION_APPROVE, run_id=paused[0].run_id)
    )
    assert (wrong.code, wrong.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "DECISION_INVALID")
    await decide(stub, user, session_id, paused[-1], agent_pb2.DECISION_ANSWER, run_id=paused[0].run_id, answer="blue")
    rest = await rest_of_run(stub, user, session_id, paused[0].run_id, paused[-1].seq)

    assert "blue" in rest[-1].completed.message.content


async def test_another_interrupt_id_and_another_user_are_refused(
    stub: agent_pb2_grpc.AgentServiceStub, user: MeshUser, other_user: MeshUser, new_session: NewSession
) -> None:
    session_id = await new_session(user)
    paused = await ask(stub, user, session_id, "what is 17*23")
    run_id = paused[0].run_id
    stranger = agent_pb2.RunInterrupt(interrupt_id=str(uuid.uuid4()))

    wrong = await rpc_failure(decide(stub, user, session_id, stranger, agent_pb2.DECISION_APPROVE, run_id=run_id))
    assert (wrong.code, wrong.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INTERRUPT_NOT_OF_RUN")
    theirs = await rpc_failure(
        decide(stub, other_user, session_id, paused[-1], agent_pb2.DECISION_APPROVE, run_id=run_id)
    )
    assert theirs.code == grpc.StatusCode.NOT_FOUND
    hidden = await rpc_failure(
        stub.ListRunDecisions(
            agent_pb2.ListRunDecisionsRequest(session_id=session_id, run_id=run_id), metadata=other_user.metadata
        )
    )
    assert hidden.code == grpc.StatusCode.NOT_FOUND
    run = (await stub.GetRun(agent_pb2.GetRunRequest(session_id=session_id, run_id=run_id), metadata=user.metadata)).run
    assert run.status == agent_pb2.RUN_STATUS_INTERRUPTED


async def test_an_expired_interrupt_is_refused_and_resolved_as_reject(
    start_agent: StartAgent, user: MeshUser, new_session: NewSession
) -> None:
    agent = await start_agent("-approvals-ttl", **SETTINGS, APPROVAL_TTL_S="1")
    session_id = await new_session(user)
    async with grpc.aio.insecure_channel(agent.addr) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        paused = await ask(stub, user, session_id, "what is 17*23")
        run_id = paused[0].run_id

        async def ended() -> agent_pb2.Run:
            request = agent_pb2.GetRunRequest(session_id=session_id, run_id=run_id)
            run = (await stub.GetRun(request, metadata=user.metadata)).run
            assert run.status == agent_pb2.RUN_STATUS_SUCCEEDED
            return run

        run = await eventually(ended, timeout_s=30, interval_s=0.25)
        late = await rpc_failure(decide(stub, user, session_id, paused[-1], agent_pb2.DECISION_APPROVE, run_id=run_id))
        listed = await stub.ListRunDecisions(
            agent_pb2.ListRunDecisionsRequest(session_id=session_id, run_id=run_id), metadata=user.metadata
        )
    assert (late.code, late.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "INTERRUPT_EXPIRED")
    assert "rejected" in run.output.content
    assert [(d.decision, d.decided_by) for d in listed.decisions] == [(agent_pb2.DECISION_REJECT, "system:expired")]


async def test_a_paused_run_is_approved_after_its_replica_is_killed_and_restarted(
    mesh: Mesh, user: MeshUser, new_session: NewSession
) -> None:
    ports = {"GRPC_PORT": str(free_port()), "METRICS_PORT": str(free_port())}
    first = await asyncio.to_thread(mesh.start_service, "agent", instance="-approvals-restart", **SETTINGS, **ports)
    session_id = await new_session(user)
    async with grpc.aio.insecure_channel(first.addr) as channel:
        paused = await ask(agent_pb2_grpc.AgentServiceStub(channel), user, session_id, "what is 17*23")
    first.signal(signal.SIGKILL)
    await asyncio.to_thread(first.process.wait, 10)  # type: ignore[union-attr]
    restarted = await asyncio.to_thread(mesh.start_service, "agent", instance="-approvals-restart", **SETTINGS, **ports)
    try:
        async with grpc.aio.insecure_channel(restarted.addr) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            await decide(stub, user, session_id, paused[-1], agent_pb2.DECISION_APPROVE, run_id=paused[0].run_id)
            rest = await rest_of_run(stub, user, session_id, paused[0].run_id, paused[-1].seq)
    finally:
        await asyncio.to_thread(restarted.stop)
    events = paused + rest
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert "391" in rest[-1].completed.message.content
