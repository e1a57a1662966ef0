"""The OAuth2 token endpoint's own error format for form logins (RFC 6749 section 5.2).

A client posting `grant_type=password` as `application/x-www-form-urlencoded` is an OAuth2
client (Swagger UI's "Authorize", FastAPI's OAuth2PasswordBearer, any OAuth library): it reads
`{"error": ..., "error_description": ...}`, not a google.rpc.Status. JSON logins keep the Status
format like every other route.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import grpc
from google.rpc import error_details_pb2, status_pb2
from starlette.responses import Response

from gateway.errors import code_of

# RPCs that act as an OAuth2 token endpoint when called with a form body.
TOKEN_ENDPOINT_RPCS = frozenset({"agentmesh.auth.v1.AuthService.Login"})
FORM_MEDIA_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
# RFC 6749 section 5.1: token responses (and their errors) must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def is_oauth2_form(rpc_name: str, media: str) -> bool:
    return rpc_name in TOKEN_ENDPOINT_RPCS and media in FORM_MEDIA_TYPES


def _reason(status: status_pb2.Status) -> str:
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def oauth2_error(status: status_pb2.Status) -> tuple[int, str]:
    """(HTTP status, OAuth2 `error`) for the Status a login failed with."""
    code = code_of(status)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        # Wrong email or password: the grant (the resource owner's credentials) is invalid.
        return 400, "invalid_grant"
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        if _reason(status) == "UNSUPPORTED_GRANT_TYPE":
            return 400, "unsupported_grant_type"
        return 400, "invalid_request"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        # Not in RFC 6749; RFC 8628 defines slow_down for the same endpoint. Retry-After says when.
        return 429, "slow_down"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return 503, "temporarily_unavailable"
    if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.OUT_OF_RANGE):
        return 400, "invalid_request"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return 400, "unauthorized_client"
    return 500, "server_error"


def oauth2_error_response(status: status_pb2.Status, headers: Mapping[str, str] | None = None) -> Response:
    """The OAuth2 error body, with the headers worth keeping (RateLimit-*, Retry-After)."""
    http_status, error = oauth2_error(status)
    # invalid_grant is a 400 without a Bearer challenge: RFC 6749 keeps 401 for invalid_client.
    response_headers = {**(headers or {}), **NO_STORE}
    body = {"error": error, "error_description": status.message}
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
        status_code=http_status,
        media_type="application/json",
        headers=response_headers,
    )
