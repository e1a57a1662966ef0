"""Logout by refresh token alone, the reuse grace period, the absolute family lifetime."""

from __future__ import annotations

import asyncio
import time

import grpc

from agentmesh.auth.v1 import auth_pb2
from tests.support.auth import SHORT_LIMITS
from tests.support.grpc_errors import rpc_failure
from tests.support.users import MeshUser, register_user


async def assert_refresh_refused(stub, refresh_token: str) -> None:
    failure = await rpc_failure(stub.Refresh(auth_pb2.RefreshRequest(refresh_token=refresh_token)))
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "REFRESH_TOKEN_INVALID")


async def test_logout_needs_no_access_token(auth_stub, user: MeshUser) -> None:
    await auth_stub.Logout(auth_pb2.LogoutRequest(refresh_token=user.refresh_token))
    await assert_refresh_refused(auth_stub, user.refresh_token)


async def test_logout_with_an_expired_access_token_still_signs_out(auth_stub, user: MeshUser) -> None:
    # What the chat page sends after 15 idle minutes: a stale bearer and the refresh token.
    stale = (("authorization", "Bearer eyJhbGciOiJFZERTQSJ9.eyJleHAiOjF9.c2ln"),)
    await auth_stub.Logout(auth_pb2.LogoutRequest(refresh_token=user.refresh_token), metadata=stale)
    await assert_refresh_refused(auth_stub, user.refresh_token)


async def test_logout_with_an_unknown_refresh_token_is_invalid_argument(auth_stub) -> None:
    failure = await rpc_failure(auth_stub.Logout(auth_pb2.LogoutRequest(refresh_token="not-a-token")))
    assert (failure.code, failure.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REFRESH_TOKEN_INVALID")


async def test_replay_within_the_grace_period_returns_the_same_pair(auth_stub, user: MeshUser) -> None:
    first = await auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=user.refresh_token))
    # A double submit / lost response: the same client presents the same token again.
    again = await auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=user.refresh_token))
    assert (again.access_token, again.refresh_token) == (first.access_token, first.refresh_token)
    assert again.expires_at == first.expires_at
    # The family is intact: the pair works.
    me = await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=(("authorization", f"Bearer {again.access_token}"),))
    assert me.user.id == user.user_id
    second = await auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=again.refresh_token))
    # Once the successor has been used, a replay is theft: the family is revoked.
    await assert_refresh_refused(auth_stub, user.refresh_token)
    await assert_refresh_refused(auth_stub, second.refresh_token)


async def test_concurrent_refreshes_with_one_token_all_get_the_same_pair(auth_stub, user: MeshUser) -> None:
    results = await asyncio.gather(
        *(auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=user.refresh_token)) for _ in range(4))
    )
    assert len({(r.access_token, r.refresh_token) for r in results}) == 1
    await auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=results[0].refresh_token))


async def test_replay_after_the_grace_period_revokes_the_family(short_auth_stub) -> None:
    user = await register_user(short_auth_stub)
    first = await short_auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=user.refresh_token))
    await asyncio.sleep(float(SHORT_LIMITS["REFRESH_REUSE_GRACE_S"]) + 0.5)  # the grace period must pass
    await assert_refresh_refused(short_auth_stub, user.refresh_token)
    await assert_refresh_refused(short_auth_stub, first.refresh_token)


async def test_a_family_ends_at_its_absolute_lifetime_however_often_refreshed(short_auth_stub) -> None:
    absolute_s = float(SHORT_LIMITS["REFRESH_ABSOLUTE_TTL_S"])
    started = time.time()
    user = await register_user(short_auth_stub)
    token = user.refresh_token
    refreshed = None
    # Refreshing keeps the sliding lifetime fresh, but never beyond the family's end.
    while time.time() - started < absolute_s - 1.5:
        refreshed = await short_auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=token))
        assert refreshed.refresh_expires_at.seconds <= started + absolute_s + 1
        token = refreshed.refresh_token
        await asyncio.sleep(0.5)
    assert refreshed is not None
    await asyncio.sleep(max(0.0, started + absolute_s + 1 - time.time()))
    await assert_refresh_refused(short_auth_stub, token)
