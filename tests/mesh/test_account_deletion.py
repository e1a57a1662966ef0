"""Account deletion and export across the real mesh: the account is unusable at once, the
erasure completes once memory and evals are back, the receipt counts what was there,
and afterwards no table of any service holds a row of the user."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import httpx
import psycopg
import pytest

from agentmesh.agent.v1 import agent_pb2, agent_pb2_grpc
from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from agentmesh.memory.v1 import memory_pb2, memory_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from runtime.service_identity import dev_service_credential
from tests.support.grpc_errors import rpc_failure
from tests.support.users import MeshUser, register_user
from tests.support.waiting import eventually

SCHEMAS = ("auth", "sessions", "agent", "memory", "evals")
STORES = ("auth", "sessions", "agent", "memory", "evals")


@dataclass(frozen=True)
class Populated:
    user: MeshUser
    session_ids: list[str]
    run_id: str


async def sql(mesh: Mesh, query: str, params: tuple | dict = ()) -> list[tuple]:
    async with await psycopg.AsyncConnection.connect(mesh.env["DATABASE_URL"], autocommit=True) as conn:
        cursor = await conn.execute(query, params)
        return await cursor.fetchall() if cursor.description else []


async def count(mesh: Mesh, query: str, params: tuple | dict = ()) -> int:
    return int((await sql(mesh, query, params))[0][0])


@pytest.fixture
async def channels(mesh: Mesh) -> AsyncIterator[dict[str, grpc.aio.Channel]]:
    names = ("auth", "sessions", "agent", "memory")
    opened = {name: grpc.aio.insecure_channel(mesh.addr(name)) for name in names}
    yield opened
    for channel in opened.values():
        await channel.close()


async def memories_of(mesh: Mesh, user: MeshUser) -> list[memory_pb2.Memory]:
    async with grpc.aio.insecure_channel(mesh.addr("memory")) as channel:
        stub = memory_pb2_grpc.MemoryServiceStub(channel)
        listed = await stub.ListMemories(memory_pb2.ListMemoriesRequest(page_size=100), metadata=user.metadata)
    return list(listed.memories)


async def populate(mesh: Mesh, channels: dict[str, grpc.aio.Channel], user: MeshUser) -> Populated:
    """Two sessions, a turn in one (checkpoint, run, events, a memory with its history
    and idempotency key, a trace), then waits until the hand-offs have arrived."""
    sessions = sessions_pb2_grpc.SessionServiceStub(channels["sessions"])
    session_ids = [
        (
            await sessions.CreateSession(sessions_pb2.CreateSessionRequest(name=name), metadata=user.metadata)
        ).session.session_id
        for name in ("talked", "empty")
    ]
    agent = agent_pb2_grpc.AgentServiceStub(channels["agent"])
    turn = await agent.Chat(
        agent_pb2.ChatRequest(
            session_id=session_ids[0], message=agent_pb2.Message(role="user", content="I live in Rome")
        ),
        metadata=user.metadata,
        timeout=60,
    )

    async def delivered() -> None:
        assert any("rome" in m.text.lower() for m in await memories_of(mesh, user))
        assert await count(mesh, "SELECT count(*) FROM evals.traces WHERE trace_id = %s", (turn.run_id,)) == 1
        assert await count(mesh, "SELECT count(*) FROM agent.outbox WHERE user_id = %s", (user.user_id,)) == 0

    await eventually(delivered, timeout_s=60, interval_s=0.5)
    return Populated(user, session_ids, turn.run_id)


async def rows_per_table(mesh: Mesh, user: MeshUser, session_ids: list[str]) -> dict[str, dict[str, int]]:
    """What the receipt must count, read straight from every schema."""
    u, s = user.user_id, session_ids
    key = hashlib.sha256(b"login:" + user.email.encode()).digest()
    queries = {
        "auth": {
            "users": "SELECT count(*) FROM auth.users WHERE id = %(u)s",
            "refresh_tokens": "SELECT count(*) FROM auth.refresh_tokens WHERE user_id = %(u)s",
            "refresh_families": "SELECT count(*) FROM auth.refresh_families WHERE user_id = %(u)s",
            "role_changes": "SELECT count(*) FROM auth.role_changes WHERE user_id = %(u)s",
            "role_changes_made_anonymised": "SELECT count(*) FROM auth.role_changes WHERE actor = 'user:' || %(u)s",
            "login_failures": "SELECT count(*) FROM auth.login_failures WHERE account_key = %(key)s",
            "token_revocations": "SELECT count(*) FROM auth.token_revocations WHERE subject = %(u)s::uuid"
            " OR subject IN (SELECT id FROM auth.refresh_families WHERE user_id = %(u)s)",
        },
        "sessions": {
            "sessions": "SELECT count(*) FROM sessions.sessions WHERE user_id = %(u)s",
            "conversation_clears": "SELECT count(*) FROM sessions.conversation_clears WHERE user_id = %(u)s",
        },
        "agent": {
            "run_events": "SELECT count(*) FROM agent.run_events e JOIN agent.runs r USING (run_id)"
            " WHERE r.user_id = %(u)s",
            "run_interrupts": "SELECT count(*) FROM agent.run_interrupts i JOIN agent.runs r USING (run_id)"
            " WHERE r.user_id = %(u)s",
            "runs": "SELECT count(*) FROM agent.runs WHERE user_id = %(u)s",
            "outbox": "SELECT count(*) FROM agent.outbox WHERE user_id = %(u)s",
            "checkpoint_writes": "SELECT count(*) FROM agent.checkpoint_writes WHERE thread_id = ANY(%(s)s)",
            "checkpoint_blobs": "SELECT count(*) FROM agent.checkpoint_blobs WHERE thread_id = ANY(%(s)s)",
            "checkpoints": "SELECT count(*) FROM agent.checkpoints WHERE thread_id = ANY(%(s)s)",
        },
        "memory": {
            "add_requests": "SELECT count(*) FROM memory.add_requests WHERE user_id = %(u)s",
            "memory_history": "SELECT count(*) FROM memory.memory_history WHERE user_id = %(u)s",
            "memories": "SELECT count(*) FROM memory.memories WHERE user_id = %(u)s",
        },
        "evals": {
            "traces": "SELECT count(*) FROM evals.traces WHERE user_id = %(u)s OR session_id = ANY(%(s)s)",
            "scores": "SELECT count(*) FROM evals.scores c JOIN evals.traces t USING (trace_id)"
            " WHERE t.user_id = %(u)s OR t.session_id = ANY(%(s)s)",
        },
    }
    params = {"u": u, "s": s, "key": key}
    counted: dict[str, dict[str, int]] = {}
    async with await psycopg.AsyncConnection.connect(mesh.env["DATABASE_URL"], autocommit=True) as conn:
        for store, tables in queries.items():
            counted[store] = {}
            for table, query in tables.items():
                row = await (await conn.execute(query, params)).fetchone()
                counted[store][table] = int(row[0]) if row else 0
    return counted


async def tables_holding(mesh: Mesh, needles: list[str]) -> set[tuple[str, str]]:
    """Every (schema, table) of every service with a value containing one of `needles`:
    uuid and text columns (arrays too), json(b) as text, and bytea (checkpoint blobs,
    run events, outbox payloads) byte for byte."""
    columns = await sql(
        mesh,
        "SELECT c.table_schema, c.table_name, c.column_name, c.data_type"
        " FROM information_schema.columns c JOIN information_schema.tables t"
        " ON t.table_schema = c.table_schema AND t.table_name = c.table_name"
        " WHERE c.table_schema = ANY(%s) AND t.table_type = 'BASE TABLE'",
        (list(SCHEMAS),),
    )
    scanned: set[str] = set()
    hits: set[tuple[str, str]] = set()
    async with await psycopg.AsyncConnection.connect(mesh.env["DATABASE_URL"], autocommit=True) as conn:
        for schema, table, column, data_type in columns:
            scanned.add(f"{schema}.{table}")
            ref = f'"{column}"'
            if data_type == "bytea":
                condition = " OR ".join(f"position(convert_to(%s, 'UTF8') in {ref}) > 0" for _ in needles)
            elif data_type in ("uuid", "text", "character varying", "json", "jsonb", "ARRAY"):
                condition = " OR ".join(f"{ref}::text LIKE '%%' || %s || '%%'" for _ in needles)
            else:
                continue
            query = f'SELECT EXISTS (SELECT 1 FROM "{schema}"."{table}" WHERE {condition})'  # noqa: S608 (catalog names)
            row = await (await conn.execute(query, tuple(needles))).fetchone()
            if row and row[0]:
                hits.add((schema, table))
    # The scan covers the tables that hold user data, not a subset by accident.
    for expected in ("agent.checkpoint_blobs", "agent.outbox", "memory.memory_history", "evals.scores"):
        assert expected in scanned, scanned
    return hits


async def deletion_row(mesh: Mesh, deletion_id: str) -> tuple[str, dict, str | None]:
    rows = await sql(mesh, "SELECT state, receipt, user_id FROM auth.account_deletions WHERE id = %s", (deletion_id,))
    state, receipt, user_id = rows[0]
    return state, receipt, (str(user_id) if user_id else None)


def receipt_counts(receipt: auth_pb2.DeletionReceipt) -> dict[str, dict[str, int]]:
    return {store.store: dict(store.counts) for store in receipt.stores if store.done}


async def test_deletion_needs_the_password_and_a_double_submit_is_one_deletion(
    auth_stub: auth_pb2_grpc.AuthServiceStub, user: MeshUser
) -> None:
    failure = await rpc_failure(
        auth_stub.DeleteAccount(auth_pb2.DeleteAccountRequest(password="Wr0ng-password!"), metadata=user.metadata)
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "PASSWORD_INCORRECT")
    await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=user.metadata)  # still there

    request = auth_pb2.DeleteAccountRequest(password=MeshUser.PASSWORD)
    answers = await asyncio.gather(
        auth_stub.DeleteAccount(request, metadata=user.metadata, timeout=60),
        auth_stub.DeleteAccount(request, metadata=user.metadata, timeout=60),
        return_exceptions=True,
    )
    # The double submit is one deletion: the later one either joins it (same receipt) or, if
    # the revocation reached the verifier first, is refused like any call of the erased user.
    receipts = [a for a in answers if isinstance(a, auth_pb2.DeleteAccountResponse)]
    refused = [a for a in answers if isinstance(a, grpc.aio.AioRpcError)]
    assert receipts and len(receipts) + len(refused) == 2
    assert all(r.code() == grpc.StatusCode.UNAUTHENTICATED for r in refused)
    assert len({r.receipt.deletion_id for r in receipts}) == 1
    first = receipts[0]
    assert first.receipt.state == auth_pb2.DELETION_STATE_SUCCEEDED
    assert receipt_counts(first.receipt)["auth"]["users"] == 1
    assert receipt_counts(first.receipt)["sessions"] == {"sessions": 0, "conversation_clears": 0}

    # After it succeeded the caller's tokens are refused: a repeat cannot erase anything.
    failure = await rpc_failure(auth_stub.DeleteAccount(request, metadata=user.metadata))
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED
    # The email is free again, for a new account with a new id.
    again = await register_user(auth_stub, email=user.email)
    assert again.user_id != user.user_id


async def test_deletion_with_memory_and_evals_down_completes_when_they_return_and_leaves_no_row(
    mesh: Mesh, channels: dict[str, grpc.aio.Channel], admin: MeshUser, other_user: MeshUser
) -> None:
    auth = auth_pb2_grpc.AuthServiceStub(channels["auth"])
    user = await register_user(auth)
    # An audit trail both ways: a role change of the user, and one the user made as an admin.
    await auth.SetUserRoles(
        auth_pb2.SetUserRolesRequest(user_id=user.user_id, roles=["user", "admin"]), metadata=admin.metadata
    )
    tokens = await auth.Refresh(auth_pb2.RefreshRequest(refresh_token=user.refresh_token))
    user = MeshUser(user.user_id, user.email, tokens.access_token, tokens.refresh_token)
    await auth.SetUserRoles(
        auth_pb2.SetUserRolesRequest(user_id=other_user.user_id, roles=["user", "admin"]), metadata=user.metadata
    )
    populated = await populate(mesh, channels, user)
    before = await rows_per_table(mesh, user, populated.session_ids)
    assert before["agent"]["checkpoints"] >= 1 and before["agent"]["run_events"] >= 1
    assert before["memory"]["memories"] >= 1 and before["memory"]["memory_history"] >= 1
    assert before["evals"]["traces"] == 1 and before["auth"]["role_changes_made_anonymised"] == 1
    needles = [user.user_id, *populated.session_ids]
    # The scan finds them before, in columns of every kind (uuid, text, bytea checkpoints).
    found_before = await tables_holding(mesh, needles)
    expected_before = {
        ("auth", "users"),
        ("auth", "role_changes"),
        ("sessions", "sessions"),
        ("agent", "runs"),
        ("agent", "checkpoints"),
        ("agent", "checkpoint_blobs"),
        ("memory", "memories"),
        ("evals", "traces"),
    }
    assert expected_before <= found_before, found_before

    stopped = ["memory", "evals"]
    try:
        await asyncio.gather(*(asyncio.to_thread(mesh.processes[name].stop) for name in stopped))
        request = auth_pb2.DeleteAccountRequest(password=MeshUser.PASSWORD)
        call = asyncio.ensure_future(auth.DeleteAccount(request, metadata=user.metadata, timeout=60))

        async def waiting_for_memory() -> None:
            query = "SELECT state, receipt, last_error FROM auth.account_deletions WHERE user_id = %s"
            rows = await sql(mesh, query, (user.user_id,))
            assert rows, "no deletion job yet"
            state, progress, error = rows[0]
            assert (state, set(progress), error) == ("pending", {"auth", "sessions", "agent"}, "memory: UNAVAILABLE")

        await eventually(waiting_for_memory, timeout_s=30, interval_s=0.2)
        # Unusable from the first second: no login, no refresh, no call with the old token.
        failure = await rpc_failure(auth.Login(auth_pb2.LoginRequest(email=user.email, password=MeshUser.PASSWORD)))
        assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "BAD_CREDENTIALS")
        failure = await rpc_failure(auth.Refresh(auth_pb2.RefreshRequest(refresh_token=user.refresh_token)))
        assert failure.code == grpc.StatusCode.UNAUTHENTICATED
        sessions = sessions_pb2_grpc.SessionServiceStub(channels["sessions"])
        failure = await rpc_failure(sessions.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=user.metadata))
        assert failure.code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        await asyncio.gather(*(asyncio.to_thread(mesh.start_service, name) for name in stopped))

    # DeleteAccount answers after ACCOUNT_DELETION_WAIT_S (10 s), usually before memory is
    # back: PENDING with the stores done so far; either way the counts are what was there.
    receipt = (await call).receipt
    done_stores = [s.store for s in receipt.stores if s.done]
    if receipt.state == auth_pb2.DELETION_STATE_PENDING:
        assert done_stores == ["auth", "sessions", "agent"]
        assert not receipt.HasField("complete_time")
    else:
        assert done_stores == list(STORES)
    assert receipt_counts(receipt) == {store: before[store] for store in done_stores}

    async def done() -> dict:
        state, stored, user_id = await deletion_row(mesh, receipt.deletion_id)
        assert state == "done"
        assert user_id is None  # the finished job keeps no user id
        return stored

    stored = await eventually(done, timeout_s=90, interval_s=0.5)
    assert stored == before, json.dumps(stored, sort_keys=True)

    # Every table of every schema: the user's id and their session ids are gone, except
    # the revocation refusing their access tokens until the last one expires.
    assert await tables_holding(mesh, needles) == {("auth", "token_revocations")}
    await sql(
        mesh,
        "UPDATE auth.token_revocations SET expires_at = clock_timestamp() - interval '1 second' WHERE subject = %s",
        (user.user_id,),
    )

    async def revocation_forgotten() -> None:
        assert await tables_holding(mesh, needles) == set()

    await eventually(revocation_forgotten, timeout_s=30, interval_s=0.5)


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


async def service_metadata(auth: auth_pb2_grpc.AuthServiceStub, name: str) -> tuple[tuple[str, str], ...]:
    issued = await auth.IssueServiceToken(
        auth_pb2.IssueServiceTokenRequest(service_name=name, credential=dev_service_credential(name))
    )
    return (("authorization", f"Bearer {issued.access_token}"),)


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


async def test_delete_account_over_http_and_no_http_route_to_erase_user_data(mesh: Mesh, user: MeshUser) -> None:
    if not mesh.gateway_url:
        pytest.skip("no gateway in this mesh (MESH_ONLY)")
    headers = {"authorization": f"Bearer {user.access_token}"}
    async with httpx.AsyncClient(base_url=mesh.gateway_url, timeout=60) as client:
        wrong = await client.post("/v1/auth/me:delete", json={"password": "Wr0ng-password!"}, headers=headers)
        assert wrong.status_code == 403, wrong.text
        info = next(d for d in wrong.json()["details"] if d["@type"].endswith("ErrorInfo"))
        assert info["reason"] == "PASSWORD_INCORRECT"
        for service in ("sessions.v1.SessionService", "agent.v1.AgentService", "memory.v1.MemoryService"):
            path = f"/agentmesh.{service}/EraseUserData"
            assert (await client.post(path, json={"user_id": user.user_id}, headers=headers)).status_code == 404

        deleted = await client.post("/v1/auth/me:delete", json={"password": MeshUser.PASSWORD}, headers=headers)
        assert deleted.status_code == 200, deleted.text
        receipt = deleted.json()["receipt"]
        assert receipt["state"] == "DELETION_STATE_SUCCEEDED"
        assert [s["store"] for s in receipt["stores"]] == list(STORES)
        assert all(s["done"] for s in receipt["stores"])
        assert receipt["stores"][0]["counts"]["users"] == "1"  # int64 is a string in JSON (proto3 mapping)
        assert (await client.get("/v1/auth/me", headers=headers)).status_code == 401
