"""Per-account login throttling: N failures within the window lock the account for
everyone, known or unknown, on every replica."""

from __future__ import annotations

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from agentmesh.auth.v1 import auth_pb2
from tests.support.auth import SHORT_LIMITS
from tests.support.grpc_errors import rpc_failure
from tests.support.users import MeshUser, register_user, unique_email

MAX_FAILURES = int(SHORT_LIMITS["LOGIN_MAX_FAILURES"])
WRONG = "Wr0ng-password!"


async def retry_after(stub, email: str, password: str) -> int:
    try:
        await stub.Login(auth_pb2.LoginRequest(email=email, password=password))
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        status = rpc_status.from_call(exc)
        assert status is not None
        for detail in status.details:
            retry = error_details_pb2.RetryInfo()
            if detail.Unpack(retry):
                return retry.retry_delay.seconds
        raise AssertionError("no RetryInfo") from None
    raise AssertionError("login succeeded but the account should be throttled")


async def test_failures_lock_the_account_even_for_the_right_password(short_auth_stub) -> None:
    user = await register_user(short_auth_stub)
    for _ in range(MAX_FAILURES):
        failure = await rpc_failure(short_auth_stub.Login(auth_pb2.LoginRequest(email=user.email, password=WRONG)))
        assert failure.reason == "BAD_CREDENTIALS"
    throttled = await rpc_failure(
        short_auth_stub.Login(auth_pb2.LoginRequest(email=user.email, password=MeshUser.PASSWORD))
    )
    assert (throttled.code, throttled.reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "LOGIN_THROTTLED")
    delay = await retry_after(short_auth_stub, user.email, MeshUser.PASSWORD)
    assert 1 <= delay <= int(SHORT_LIMITS["LOGIN_FAILURE_WINDOW_S"])
    # Other accounts are not affected.
    other = await register_user(short_auth_stub)
    await short_auth_stub.Login(auth_pb2.LoginRequest(email=other.email, password=MeshUser.PASSWORD))


async def test_unknown_emails_throttle_exactly_like_known_ones(short_auth_stub) -> None:
    known = await register_user(short_auth_stub)
    unknown = unique_email("ghost")
    answers = []
    for email in (known.email, unknown):
        for _ in range(MAX_FAILURES):
            await rpc_failure(short_auth_stub.Login(auth_pb2.LoginRequest(email=email, password=WRONG)))
        answers.append(await rpc_failure(short_auth_stub.Login(auth_pb2.LoginRequest(email=email, password=WRONG))))
    assert answers[0] == answers[1]
    assert answers[0].code == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_failures_count_across_replicas(auth_stub, short_auth_stub) -> None:
    # Two failures on one replica and one on another lock the account (limit 3 on the second).
    user = await register_user(auth_stub)
    for stub in (auth_stub, auth_stub, short_auth_stub):
        await rpc_failure(stub.Login(auth_pb2.LoginRequest(email=user.email, password=WRONG)))
    throttled = await rpc_failure(
        short_auth_stub.Login(auth_pb2.LoginRequest(email=user.email, password=MeshUser.PASSWORD))
    )
    assert throttled.reason == "LOGIN_THROTTLED"


async def test_a_successful_login_clears_the_count(short_auth_stub) -> None:
    user = await register_user(short_auth_stub)
    for _ in range(MAX_FAILURES - 1):
        await rpc_failure(short_auth_stub.Login(auth_pb2.LoginRequest(email=user.email, password=WRONG)))
    await short_auth_stub.Login(auth_pb2.LoginRequest(email=user.email, password=MeshUser.PASSWORD))
    for _ in range(MAX_FAILURES - 1):
        await rpc_failure(short_auth_stub.Login(auth_pb2.LoginRequest(email=user.email, password=WRONG)))
    await short_auth_stub.Login(auth_pb2.LoginRequest(email=user.email, password=MeshUser.PASSWORD))
