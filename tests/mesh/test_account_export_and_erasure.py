"""A user's data across the real mesh, short of deleting the account: the export holds the
sessions, their messages and the memories; each service's EraseUserData is for the auth
service only and counts each row once; and a turn running when the account is deleted is
stopped before it can write anything back."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import grpc
import httpx

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from tests.support.account_data import count, memories_of, populate, receipt_counts, tables_holding
from tests.support.grpc_errors import rpc_failure
from tests.support.services import service_metadata
from tests.support.users import MeshUser
from tests.support.waiting import eventually


async def test_export_contains_the_sessions_their_messages_and_the_memories(
    mesh: Mesh, channels: dict[str, grpc.aio.Channel], user: MeshUser
) -> None:
    populated = await populate(mesh, channels, user)
    auth = auth_pb2_grpc.AuthServiceStub(channels["auth"])
    records = [r async for r in auth.ExportAccount(auth_pb2.ExportAccountRequest(), metadata=user.metadata)]
    kinds = [r.WhichOneof("record") for r in records]
    assert kinds[0] == "session" and "message" in kinds and kinds[-1] == "memory"

    sessions = {r.session.session_id: r.session for r in records if r.HasField("session")}
    assert set(sessions) == set(populated.session_ids)
    assert all(s.created_at.seconds > 0 and s.user_id == user.user_id for s in sessions.values())
    messages = [r.message for r in records if r.HasField("message")]
    assert {m.session_id for m in messages} == {populated.session_ids[0]}
    assert (messages[0].message.role, messages[0].message.content) == ("user", "I live in Rome")
    assert [m.message.role for m in messages] == ["user", "assistant"]
    assert messages[1].message.content
    memories = [r.memory for r in records if r.HasField("memory")]
    assert {m.memory_id for m in memories} == {m.memory_id for m in await memories_of(mesh, user)}
    assert any("rome" in m.text.lower() and m.created_at.seconds > 0 for m in memories)

    if mesh.gateway_url:  # the same stream over HTTP, newline-delimited JSON
        async with httpx.AsyncClient(base_url=mesh.gateway_url, timeout=30) as client:
            response = await client.get("/v1/auth/me:export", headers={"authorization": f"Bearer {user.access_token}"})
        assert response.status_code == 200, response.text
        lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        assert len(lines) == len(records)
        assert any("Rome" in json.dumps(line) for line in lines)


async def test_erase_user_data_is_for_the_auth_service_only_and_a_retry_counts_each_row_once(
    channels: dict[str, grpc.aio.Channel], user: MeshUser
) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(channels["auth"])
    sessions = sessions_pb2_grpc.SessionServiceStub(channels["sessions"])
    for _ in range(2):
        await sessions.CreateSession(sessions_pb2.CreateSessionRequest(name="x"), metadata=user.metadata)
    request = sessions_pb2.EraseUserDataRequest(erasure_id=str(uuid.uuid4()), user_id=user.user_id)

    failure = await rpc_failure(sessions.EraseUserData(request, metadata=user.metadata))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SERVICE_ONLY")
    failure = await rpc_failure(sessions.EraseUserData(request, metadata=await service_metadata(auth, "agent")))
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "ERASER_NOT_AUTH")
    as_auth = await service_metadata(auth, "auth")
    malformed = sessions_pb2.EraseUserDataRequest(erasure_id="x", user_id=user.user_id)
    failure = await rpc_failure(sessions.EraseUserData(malformed, metadata=as_auth))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "ERASURE_ID_INVALID")

    first = await sessions.EraseUserData(request, metadata=as_auth)
    assert dict(first.counts) == {"sessions": 2, "conversation_clears": 0} and len(first.session_ids) == 2
    # The answer was "lost": the retry erases nothing new and still answers the totals.
    again = await sessions.EraseUserData(request, metadata=as_auth)
    assert dict(again.counts) == dict(first.counts) and set(again.session_ids) == set(first.session_ids)
    # Each service answers under the same name, with its own tables.
    memory = memory_pb2_grpc.MemoryServiceStub(channels["memory"])
    erased = await memory.EraseUserData(
        memory_pb2.EraseUserDataRequest(erasure_id=request.erasure_id, user_id=user.user_id), metadata=as_auth
    )
    assert dict(erased.counts) == {"add_requests": 0, "memory_history": 0, "memories": 0}
    agent = agent_pb2_grpc.AgentServiceStub(channels["agent"])
    erased = await agent.EraseUserData(
        agent_pb2.EraseUserDataRequest(
            erasure_id=request.erasure_id, user_id=user.user_id, session_ids=list(first.session_ids)
        ),
        metadata=as_auth,
    )
    assert set(erased.counts) == {
        "run_events",
        "run_interrupts",
        "runs",
        "outbox",
        "checkpoint_writes",
        "checkpoint_blobs",
        "checkpoints",
    }


STALLED_MODEL = "erase-test-model"
# Longer than the deletion's start delay (3 s): the turn is still stalled when the erasure
# runs, and would go on to write its end and checkpoint right after, if not stopped.
STALL_S = 8


async def test_a_turn_running_when_the_account_is_deleted_is_stopped_and_leaves_nothing(
    mesh: Mesh, channels: dict[str, grpc.aio.Channel], user: MeshUser
) -> None:
    """The turn runs on another agent replica and stalls mid-answer; the erasure (asked of
    the mesh's agent) rolls it back first, so it cannot write its checkpoint back."""
    replica = await asyncio.to_thread(
        mesh.start_service, "agent", instance="-erase", LLM_MODELS=STALLED_MODEL, MEMORY_ENABLED="false"
    )
    try:
        async with httpx.AsyncClient(base_url=mesh.llm_url.removesuffix("/v1"), timeout=10) as control:
            fault = {"model": STALLED_MODEL, "kind": "stall", "stall_s": STALL_S, "after_tokens": 2, "count": 1}
            assert (await control.post("/_offline/faults", json=fault)).status_code == 200
        sessions = sessions_pb2_grpc.SessionServiceStub(channels["sessions"])
        session_id = (
            await sessions.CreateSession(sessions_pb2.CreateSessionRequest(name="busy"), metadata=user.metadata)
        ).session.session_id
        async with grpc.aio.insecure_channel(replica.addr) as channel:
            agent = agent_pb2_grpc.AgentServiceStub(channel)
            run = (
                await agent.CreateRun(
                    agent_pb2.CreateRunRequest(
                        session_id=session_id, message=agent_pb2.Message(role="user", content="tell me about the sea")
                    ),
                    metadata=user.metadata,
                )
            ).run

            async def streaming() -> None:
                got = await agent.GetRun(
                    agent_pb2.GetRunRequest(session_id=session_id, run_id=run.run_id), metadata=user.metadata
                )
                assert got.run.status == agent_pb2.RUN_STATUS_RUNNING
                assert await count(mesh, "SELECT count(*) FROM agent.run_events WHERE run_id = %s", (run.run_id,)) >= 2

            await eventually(streaming, timeout_s=30, interval_s=0.2)
            stalled_at = time.monotonic()

        auth = auth_pb2_grpc.AuthServiceStub(channels["auth"])
        answer = await auth.DeleteAccount(
            auth_pb2.DeleteAccountRequest(password=MeshUser.PASSWORD), metadata=user.metadata, timeout=60
        )
        assert answer.receipt.state == auth_pb2.DELETION_STATE_SUCCEEDED
        assert receipt_counts(answer.receipt)["agent"]["runs"] == 1
        # Past the stall's end: a turn that had not been stopped has written its end by now.
        await asyncio.sleep(max(1.0, stalled_at + STALL_S + 2 - time.monotonic()))
        needles = [user.user_id, session_id, run.run_id]
        assert await tables_holding(mesh, needles) == {("auth", "token_revocations")}
    finally:
        await asyncio.to_thread(replica.stop)
