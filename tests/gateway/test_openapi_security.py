"""/openapi.json says, per operation, whether it needs a bearer token (from the contracts)."""

from __future__ import annotations

import pytest

from gateway.descriptors import load_descriptor_set
from gateway.openapi import build_openapi
from gateway.settings import DEFAULT_DESCRIPTOR_SET

BEARER = [{"bearerAuth": []}]


@pytest.fixture(scope="module")
def document() -> dict:
    api = load_descriptor_set(DEFAULT_DESCRIPTOR_SET)
    return build_openapi(api, title="agentmesh API", version="v1", emit_unpopulated=True)


def operations(document: dict) -> dict[str, dict]:
    return {operation["operationId"]: operation for path in document["paths"].values() for operation in path.values()}


def test_no_document_wide_optional_auth(document: dict) -> None:
    # The seed's global `[{"bearerAuth": []}, {}]` told clients every call works without a token.
    assert "security" not in document
    assert all("security" in operation for operation in operations(document).values())


def test_sign_in_operations_need_no_token(document: dict) -> None:
    by_id = operations(document)
    for operation_id in (
        "AuthService_Register",
        "AuthService_Login",
        "AuthService_Refresh",
        "AuthService_Logout",
        "AuthService_GetJwks",
        "AuthService_GetJwks_2",  # /.well-known/jwks.json
    ):
        assert by_id[operation_id]["security"] == [], operation_id


def test_everything_else_needs_a_bearer_token(document: dict) -> None:
    by_id = operations(document)
    for operation_id in (
        "AuthService_GetMe",
        "AgentService_Chat",
        "AgentService_StreamChat",
        "SessionService_ListSessions",
    ):
        assert by_id[operation_id]["security"] == BEARER, operation_id
    public = {operation_id for operation_id, operation in by_id.items() if operation["security"] == []}
    assert public == {
        "AuthService_Register",
        "AuthService_Login",
        "AuthService_Refresh",
        "AuthService_Logout",
        "AuthService_GetJwks",
        "AuthService_GetJwks_2",
    }
    assert all(operation["security"] in ([], BEARER) for operation in by_id.values())
