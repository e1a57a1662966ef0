"""Account deletion across the real mesh: the account is unusable at once, the erasure
completes once memory and evals are back, the receipt counts what was there, and afterwards
no table of any service holds a row of the user. Export and the per-service erasure RPC are
in test_account_export_and_erasure.py."""

from __future__ import annotations

import asyncio
import json

import grpc
import httpx
import pytest

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from tests.support.account_data import (
    STORES,
    deletion_row,
    populate,
    receipt_counts,
    rows_per_table,
    sql,
    tables_holding,
)
from tests.support.grpc_errors import rpc_failure
from tests.support.users import MeshUser, register_user
from tests.support.waiting import eventually


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
    # back: PENDING with the stores done so far, in order (memory, even evals, may be done
    # already if they came back within the wait: the job stays pending until the sessions
    # service has forgotten the session ids, its last step); either way the counts are what
    # was there.
    receipt = (await call).receipt
    done_stores = [s.store for s in receipt.stores if s.done]
    if receipt.state == auth_pb2.DELETION_STATE_PENDING:
        assert done_stores == list(STORES[: len(done_stores)]), done_stores
        assert len(done_stores) >= 3, done_stores  # auth, sessions and agent were up throughout
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
