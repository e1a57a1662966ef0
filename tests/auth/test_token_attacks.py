"""Forged, stale and malformed access tokens are all UNAUTHENTICATED.

The claim checks (exp, nbf, iss, aud) are exercised with tokens signed by the real
signing key, read from the database the way only someone holding SIGNING_KEY_SECRET
could, so a failure can only come from the claim check itself.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import grpc
import jwt
import pytest

from agentmesh.auth.v1 import auth_pb2
from meshctl.mesh import Mesh
from services.auth.keys import generate_key
from tests.support.grpc_errors import rpc_failure
from tests.support.tokens import sign
from tests.support.users import MeshUser


def claims(user: MeshUser, **overrides: object) -> dict:
    now = int(time.time())
    base = {
        "iss": "agentmesh-auth",
        "aud": "agentmesh",
        "sub": user.user_id,
        "roles": ["user"],
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def get_me(auth_stub, token: str):
    return await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=(("authorization", f"Bearer {token}"),))


async def assert_refused(auth_stub, token: str, reason: str = "TOKEN_INVALID") -> None:
    failure = await rpc_failure(get_me(auth_stub, token))
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED
    assert failure.reason == reason


async def test_a_correctly_signed_token_is_accepted(auth_stub, signing_key, user: MeshUser) -> None:
    me = await get_me(auth_stub, sign(signing_key, claims(user)))
    assert me.user.id == user.user_id


async def test_alg_none_is_refused(auth_stub, user: MeshUser, signing_key) -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT", "kid": signing_key.kid}).encode())
    payload = b64(json.dumps(claims(user)).encode())
    await assert_refused(auth_stub, f"{header}.{payload}.")


async def test_hs256_signed_with_the_public_key_is_refused(auth_stub, user: MeshUser, signing_key) -> None:
    public = signing_key.public_jwk["x"].encode()
    token = jwt.encode(claims(user), public, algorithm="HS256", headers={"kid": signing_key.kid})
    await assert_refused(auth_stub, token)


async def test_expired_token_is_refused(auth_stub, user: MeshUser, signing_key) -> None:
    now = int(time.time())
    await assert_refused(auth_stub, sign(signing_key, claims(user, iat=now - 1000, exp=now - 60)), "TOKEN_EXPIRED")


async def test_token_not_yet_valid_is_refused(auth_stub, user: MeshUser, signing_key) -> None:
    await assert_refused(auth_stub, sign(signing_key, claims(user, nbf=int(time.time()) + 3600)))


@pytest.mark.parametrize(("claim", "value"), [("iss", "someone-else"), ("aud", "another-api")])
async def test_wrong_issuer_or_audience_is_refused(auth_stub, user: MeshUser, signing_key, claim, value) -> None:
    await assert_refused(auth_stub, sign(signing_key, claims(user, **{claim: value})))


@pytest.mark.parametrize("missing", ["exp", "jti", "sub", "iat"])
async def test_tokens_missing_a_required_claim_are_refused(auth_stub, user: MeshUser, signing_key, missing) -> None:
    await assert_refused(auth_stub, sign(signing_key, claims(user, **{missing: None})))


async def test_tampered_payload_is_refused(auth_stub, user: MeshUser, other_user: MeshUser) -> None:
    header, _payload, signature = user.access_token.split(".")
    forged = claims(other_user, roles=["user", "admin"])
    await assert_refused(auth_stub, f"{header}.{b64(json.dumps(forged).encode())}.{signature}")


async def test_unknown_kid_is_refused(auth_stub, user: MeshUser) -> None:
    kid, private, _jwk = generate_key("EdDSA")
    token = jwt.encode(claims(user), private, algorithm="EdDSA", headers={"kid": kid})
    await assert_refused(auth_stub, token)


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "", "Bearer", "e30.e30.e30"])
async def test_garbage_is_refused(auth_stub, garbage: str) -> None:
    failure = await rpc_failure(get_me(auth_stub, garbage))
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED


async def test_missing_authorization_is_refused(auth_stub) -> None:
    failure = await rpc_failure(auth_stub.GetMe(auth_pb2.GetMeRequest()))
    assert failure.code == grpc.StatusCode.UNAUTHENTICATED
    assert failure.reason == "TOKEN_MISSING"


async def test_other_services_refuse_the_same_forgeries(mesh: Mesh, user: MeshUser, signing_key) -> None:
    """Every service verifies locally from the JWKS, with the same rules."""
    from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    now = int(time.time())
    async with grpc.aio.insecure_channel(mesh.addr("sessions")) as channel:
        stub = sessions_pb2_grpc.SessionServiceStub(channel)
        good = sign(signing_key, claims(user))
        await stub.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=(("authorization", f"Bearer {good}"),))
        for bad in (sign(signing_key, claims(user, exp=now - 10, iat=now - 100)), "garbage"):
            failure = await rpc_failure(
                stub.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=(("authorization", f"Bearer {bad}"),))
            )
            assert failure.code == grpc.StatusCode.UNAUTHENTICATED
