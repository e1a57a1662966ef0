"""A revoked access token is refused by every service on every replica within 2 s,
while each service still verifies locally (the revocation feed from auth)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from tests.support.grpc_errors import rpc_failure
from tests.support.users import MeshUser, register_user
from tests.support.waiting import eventually

REVOCATION_BOUND_S = 2.0


@pytest.fixture(scope="module")
def sessions_b(mesh: Mesh) -> Iterator[ChildProcess]:
    child = mesh.start_service("sessions", instance="-b")
    yield child
    child.stop()


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def list_sessions(addr: str, token: str) -> None:
    async with grpc.aio.insecure_channel(addr) as channel:
        await sessions_pb2_grpc.SessionServiceStub(channel).ListSessions(
            sessions_pb2.ListSessionsRequest(), metadata=bearer(token), timeout=5
        )


async def assert_refused(addr: str, token: str) -> None:
    failure = await rpc_failure(list_sessions(addr, token))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")


async def refused_everywhere_within_bound(addrs: list[str], token: str, since: float) -> None:
    for addr in addrs:
        await eventually(lambda addr=addr: assert_refused(addr, token), timeout_s=REVOCATION_BOUND_S * 2)
    elapsed = time.monotonic() - since
    assert elapsed < REVOCATION_BOUND_S, f"refused everywhere only after {elapsed:.2f}s"


@pytest.fixture
def replicas(mesh: Mesh, sessions_b: ChildProcess) -> list[str]:
    """Two replicas of the sessions service."""
    return [mesh.addr("sessions"), sessions_b.addr]


async def warm(addrs: list[str], token: str) -> None:
    """The token works everywhere first, so each replica has it in its verified cache."""
    for addr in addrs:
        await list_sessions(addr, token)


async def test_logout_refuses_the_access_token_on_every_replica(auth_stub, replicas, user: MeshUser) -> None:
    await warm(replicas, user.access_token)
    started = time.monotonic()
    await auth_stub.Logout(auth_pb2.LogoutRequest(refresh_token=user.refresh_token))
    await refused_everywhere_within_bound(replicas, user.access_token, started)
    me = await rpc_failure(auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=user.metadata))
    assert me.reason == "TOKEN_REVOKED"


async def test_logout_all_refuses_every_token_of_the_user(auth_stub, replicas, user: MeshUser) -> None:
    second = await auth_stub.Login(auth_pb2.LoginRequest(email=user.email, password=MeshUser.PASSWORD))
    await warm(replicas, user.access_token)
    await warm(replicas, second.access_token)
    started = time.monotonic()
    ended = await auth_stub.LogoutAll(auth_pb2.LogoutAllRequest(), metadata=user.metadata)
    assert ended.count == 2
    await refused_everywhere_within_bound(replicas, user.access_token, started)
    await refused_everywhere_within_bound(replicas, second.access_token, started)
    for refresh_token in (user.refresh_token, second.refresh_token):
        failure = await rpc_failure(auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=refresh_token)))
        assert failure.reason == "REFRESH_TOKEN_INVALID"
    # Signing in again works: only tokens issued before LogoutAll are refused.
    again = await auth_stub.Login(auth_pb2.LoginRequest(email=user.email, password=MeshUser.PASSWORD))
    await list_sessions(replicas[1], again.access_token)


async def test_refresh_reuse_detection_refuses_the_familys_access_tokens(auth_stub, replicas, user: MeshUser) -> None:
    first = await auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=user.refresh_token))
    second = await auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=first.refresh_token))
    await warm(replicas, second.access_token)
    started = time.monotonic()
    replay = await rpc_failure(auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=user.refresh_token)))
    assert replay.code == grpc.StatusCode.UNAUTHENTICATED
    await refused_everywhere_within_bound(replicas, second.access_token, started)


async def test_role_change_refuses_the_tokens_with_the_old_roles(
    auth_stub, replicas, admin: MeshUser, user: MeshUser
) -> None:
    await warm(replicas, user.access_token)
    started = time.monotonic()
    await auth_stub.SetUserRoles(
        auth_pb2.SetUserRolesRequest(user_id=user.user_id, roles=["user", "admin"]), metadata=admin.metadata
    )
    await refused_everywhere_within_bound(replicas, user.access_token, started)
    refreshed = await auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=user.refresh_token))
    me = await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(refreshed.access_token))
    assert list(me.user.roles) == ["user", "admin"]


async def test_other_tokens_keep_working(auth_stub, replicas, user: MeshUser, other_user: MeshUser) -> None:
    other_device = await auth_stub.Login(auth_pb2.LoginRequest(email=user.email, password=MeshUser.PASSWORD))
    await auth_stub.Logout(auth_pb2.LogoutRequest(refresh_token=user.refresh_token))
    await eventually(lambda: assert_refused(replicas[1], user.access_token), timeout_s=REVOCATION_BOUND_S)
    for token in (other_device.access_token, other_user.access_token):
        for addr in replicas:
            await list_sessions(addr, token)


async def test_a_replica_started_after_the_logout_refuses_at_once(mesh: Mesh, auth_stub, user: MeshUser) -> None:
    await auth_stub.Logout(auth_pb2.LogoutRequest(refresh_token=user.refresh_token))
    fresh = mesh.start_service("sessions", instance="-after-logout")
    try:
        await assert_refused(fresh.addr, user.access_token)
    finally:
        fresh.stop()


async def test_replicas_of_auth_share_revocations_and_services_survive_an_auth_outage(
    mesh: Mesh, auth_stub, user: MeshUser, other_user: MeshUser
) -> None:
    # A second auth replica, and a sessions replica that follows only that one.
    auth_b = mesh.start_service("auth", instance="-outage")
    sessions_c = mesh.start_service("sessions", instance="-follows-auth-b", AUTH_ADDR=auth_b.addr)
    try:
        await list_sessions(sessions_c.addr, user.access_token)
        await list_sessions(sessions_c.addr, other_user.access_token)
        started = time.monotonic()
        # Logout through the first auth replica; the second learns it from the database.
        await auth_stub.Logout(auth_pb2.LogoutRequest(refresh_token=user.refresh_token))
        await refused_everywhere_within_bound([sessions_c.addr], user.access_token, started)
        async with grpc.aio.insecure_channel(auth_b.addr) as channel:
            me = await rpc_failure(
                auth_pb2_grpc.AuthServiceStub(channel).GetMe(auth_pb2.GetMeRequest(), metadata=user.metadata)
            )
            assert me.reason == "TOKEN_REVOKED"

        auth_b.stop()
        # Auth is gone: the known revocation still holds, every other token still works.
        await assert_refused(sessions_c.addr, user.access_token)
        await list_sessions(sessions_c.addr, other_user.access_token)
        fresh_user = await register_user(auth_stub)  # signed by a key sessions_c already knows
        await list_sessions(sessions_c.addr, fresh_user.access_token)
    finally:
        sessions_c.stop()
        auth_b.stop()
