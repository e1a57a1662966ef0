"""The auth changes as HTTP clients see them through the real gateway: the JWKS members,
429 with Retry-After for a throttled account, logout without an access token, LogoutAll,
SetUserRoles."""

from __future__ import annotations

import httpx
import pytest

from agentmesh.auth.v1 import auth_pb2
from meshctl.mesh import Mesh
from tests.support.users import MeshUser, register_user, unique_email

BASE_MEMBERS = {"kty", "kid", "alg", "use"}


@pytest.fixture(scope="module")
def gateway_url(mesh: Mesh) -> str:
    if not mesh.gateway_url:
        mesh.start_gateway()
    return mesh.gateway_url


async def test_jwks_publishes_exactly_the_rfc_8037_members_for_okp(gateway_url: str, auth_stub) -> None:
    async with httpx.AsyncClient(base_url=gateway_url) as client:
        for path in ("/.well-known/jwks.json", "/v1/auth/jwks"):
            response = await client.get(path)
            assert response.status_code == 200
            keys = response.json()["keys"]
            assert keys
            for key in keys:
                assert key["kty"] == "OKP"
                assert set(key) == BASE_MEMBERS | {"crv", "x"}, key
                assert key["crv"] == "Ed25519" and key["x"]
    # The gRPC answer has the same presence: n and e are absent, not empty.
    jwks = await auth_stub.GetJwks(auth_pb2.GetJwksRequest())
    for key in jwks.keys:
        assert key.HasField("x") and key.HasField("crv")
        assert not key.HasField("n") and not key.HasField("e")


async def test_a_throttled_login_answers_429_with_retry_after(gateway_url: str) -> None:
    email = unique_email("locked")  # unknown account: throttled all the same
    async with httpx.AsyncClient(base_url=gateway_url) as client:
        for _ in range(10):  # LOGIN_MAX_FAILURES default
            response = await client.post("/v1/auth/login", json={"email": email, "password": "Wr0ng-password!"})
            assert response.status_code == 401
        response = await client.post("/v1/auth/login", json={"email": email, "password": "Wr0ng-password!"})
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 900
    body = response.json()
    info = next(d for d in body["details"] if d["@type"].endswith("ErrorInfo"))
    assert info["reason"] == "LOGIN_THROTTLED"


@pytest.mark.parametrize("authorization", [None, "Bearer eyJhbGciOiJFZERTQSJ9.eyJleHAiOjF9.c2ln"])
async def test_logout_over_http_needs_only_the_refresh_token(
    gateway_url: str, auth_stub, authorization: str | None
) -> None:
    # The chat page's "Sign out" after 15 idle minutes sends its expired access token along.
    user = await register_user(auth_stub)
    headers = {"Authorization": authorization} if authorization else {}
    async with httpx.AsyncClient(base_url=gateway_url) as client:
        response = await client.post("/v1/auth/logout", json={"refresh_token": user.refresh_token}, headers=headers)
        assert response.status_code == 200, response.text
        refresh = await client.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
        assert refresh.status_code == 401


async def test_logout_all_and_set_roles_over_http(gateway_url: str, auth_stub, admin: MeshUser) -> None:
    user = await register_user(auth_stub)
    async with httpx.AsyncClient(base_url=gateway_url) as client:
        headers = {"Authorization": f"Bearer {user.access_token}"}
        forbidden = await client.post(f"/v1/users/{user.user_id}:setRoles", json={"roles": ["admin"]}, headers=headers)
        assert forbidden.status_code == 403
        ended = await client.post("/v1/auth:logoutAll", json={}, headers=headers)
        assert ended.status_code == 200
        assert ended.json() == {"count": 1}
        set_roles = await client.post(
            f"/v1/users/{user.user_id}:setRoles",
            json={"roles": ["admin"]},
            headers={"Authorization": f"Bearer {admin.access_token}"},
        )
        assert set_roles.status_code == 200, set_roles.text
        assert set_roles.json()["roles"] == ["user", "admin"]
        assert set_roles.json()["id"] == user.user_id
        # Service-only RPCs have no HTTP route at all.
        for path in ("/agentmesh.auth.v1.AuthService/IssueServiceToken", "/v1/auth:issueServiceToken"):
            assert (await client.post(path, json={})).status_code == 404
