"""Register, log in, refresh, log out — against the real auth service."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from agentmesh.auth.v1 import auth_pb2
from tests.support.grpc_errors import rpc_failure
from tests.support.users import MeshUser, register_user, unique_email


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def test_register_login_me_refresh_logout(auth_stub) -> None:
    email = unique_email("flow")
    registered = await auth_stub.Register(auth_pb2.RegisterRequest(email=email.upper(), password=MeshUser.PASSWORD))
    assert registered.user.email == email
    assert list(registered.user.roles) == ["user"]
    assert registered.tokens.token_type == "bearer"
    assert registered.tokens.expires_in == 900

    login = await auth_stub.Login(auth_pb2.LoginRequest(email=email, password=MeshUser.PASSWORD))
    me = await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(login.access_token))
    assert (me.user.id, me.user.email) == (registered.user.id, email)
    assert me.user.created_at.seconds > 0

    refreshed = await auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=login.refresh_token))
    assert refreshed.refresh_token != login.refresh_token
    me_again = await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(refreshed.access_token))
    assert me_again.user.id == registered.user.id

    await auth_stub.Logout(
        auth_pb2.LogoutRequest(refresh_token=refreshed.refresh_token), metadata=bearer(refreshed.access_token)
    )
    failure = await rpc_failure(auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=refreshed.refresh_token)))
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED
    assert failure.reason == "REFRESH_TOKEN_INVALID"


async def test_login_accepts_the_oauth2_password_form_fields(auth_stub, user: MeshUser) -> None:
    login = await auth_stub.Login(
        auth_pb2.LoginRequest(username=user.email, password=MeshUser.PASSWORD, grant_type="password")
    )
    me = await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=bearer(login.access_token))
    assert me.user.id == user.user_id


async def test_login_refuses_other_grant_types(auth_stub, user: MeshUser) -> None:
    failure = await rpc_failure(
        auth_stub.Login(
            auth_pb2.LoginRequest(username=user.email, password=MeshUser.PASSWORD, grant_type="client_credentials")
        )
    )
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.reason == "UNSUPPORTED_GRANT_TYPE"


@pytest.mark.parametrize(
    ("password", "reason", "words"),
    [
        ("Sh0rt!", "PASSWORD_TOO_SHORT", "at least 8 characters"),
        ("Aa1!" + "x" * 61, "PASSWORD_TOO_LONG", "at most 64 characters"),
        ("lowercase1!", "PASSWORD_NEEDS_UPPERCASE", "uppercase letter"),
        ("NoDigits!!", "PASSWORD_NEEDS_DIGIT", "number"),
        ("NoSpecial123", "PASSWORD_NEEDS_SPECIAL", "special character"),
    ],
)
async def test_each_password_rule_is_enforced_and_named(auth_stub, password: str, reason: str, words: str) -> None:
    email = unique_email("policy")
    failure = await rpc_failure(auth_stub.Register(auth_pb2.RegisterRequest(email=email, password=password)))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.reason == reason
    assert words in failure.message
    # Nothing was half-written: the email is still free.
    await auth_stub.Register(auth_pb2.RegisterRequest(email=email, password=MeshUser.PASSWORD))


@pytest.mark.parametrize("email", ["", "not-an-email", "a@b", "x" * 250 + "@example.com"])
async def test_invalid_emails_are_rejected(auth_stub, email: str) -> None:
    failure = await rpc_failure(auth_stub.Register(auth_pb2.RegisterRequest(email=email, password=MeshUser.PASSWORD)))
    assert failure.code == grpc.StatusCode.INVALID_ARGUMENT
    assert failure.reason in {"EMAIL_REQUIRED", "EMAIL_INVALID"}


async def test_duplicate_email_is_already_exists_whatever_its_case(auth_stub, user: MeshUser) -> None:
    failure = await rpc_failure(
        auth_stub.Register(auth_pb2.RegisterRequest(email=user.email.upper(), password=MeshUser.PASSWORD))
    )
    assert failure.code == grpc.StatusCode.ALREADY_EXISTS
    assert failure.reason == "EMAIL_TAKEN"


async def test_wrong_password_and_unknown_email_are_indistinguishable(auth_stub, user: MeshUser) -> None:
    wrong_password = await rpc_failure(
        auth_stub.Login(auth_pb2.LoginRequest(email=user.email, password="Wr0ng-password!"))
    )
    unknown_email = await rpc_failure(
        auth_stub.Login(auth_pb2.LoginRequest(email=unique_email("nobody"), password=MeshUser.PASSWORD))
    )
    malformed_email = await rpc_failure(auth_stub.Login(auth_pb2.LoginRequest(email="nope", password="x")))
    assert wrong_password == unknown_email == malformed_email
    assert wrong_password.code == grpc.StatusCode.UNAUTHENTICATED


async def test_reused_refresh_token_revokes_the_whole_family(auth_stub, user: MeshUser) -> None:
    first = await auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=user.refresh_token))
    second = await auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=first.refresh_token))
    # The spent token comes back after its successor was used (a thief replaying it, not
    # the same client retrying): refused, and the family dies, so even the legitimate
    # newest token stops working.
    replay = await rpc_failure(auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=user.refresh_token)))
    assert replay.code == grpc.StatusCode.UNAUTHENTICATED
    newest = await rpc_failure(auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=second.refresh_token)))
    assert newest.code == grpc.StatusCode.UNAUTHENTICATED
    # Other sessions of the same user (other families) are unaffected.
    login = await auth_stub.Login(auth_pb2.LoginRequest(email=user.email, password=MeshUser.PASSWORD))
    await auth_stub.Refresh(auth_pb2.RefreshRequest(refresh_token=login.refresh_token))


async def test_the_admin_fixture_holds_the_granted_admin_role(auth_stub, admin: MeshUser) -> None:
    me = await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=admin.metadata)
    assert set(me.user.roles) == {"user", "admin"}


async def test_concurrent_registrations_of_one_email_create_one_account(auth_stub) -> None:
    email = unique_email("race")
    calls = [auth_stub.Register(auth_pb2.RegisterRequest(email=email, password=MeshUser.PASSWORD)) for _ in range(5)]
    results = await asyncio.gather(*calls, return_exceptions=True)
    created = [r for r in results if isinstance(r, auth_pb2.RegisterResponse)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(created) == 1
    assert {r.code() for r in refused} == {grpc.StatusCode.ALREADY_EXISTS}


async def test_register_user_helper_gives_a_working_token(auth_stub) -> None:
    fresh = await register_user(auth_stub)
    me = await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=fresh.metadata)
    assert me.user.email == fresh.email
