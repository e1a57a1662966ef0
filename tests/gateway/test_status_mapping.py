"""gRPC status -> HTTP status and the google.rpc.Status JSON body."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from gateway.errors import (
    HTTP_STATUS_BY_CODE,
    GatewayError,
    error_response,
    http_status_for,
    status_from_rpc_error,
    status_response,
    status_to_json,
)

# API.md's table, which grpc-gateway and Envoy share.
EXPECTED = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
    "UNAUTHENTICATED": 401,
}


@pytest.mark.parametrize(("name", "status"), sorted(EXPECTED.items()))
def test_grpc_code_maps_to_the_documented_http_status(name: str, status: int) -> None:
    assert http_status_for(grpc.StatusCode[name]) == status


def test_every_grpc_code_is_in_the_table() -> None:
    assert {code.name for code in HTTP_STATUS_BY_CODE} == {code.name for code in grpc.StatusCode}


def _packed(message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def test_status_json_has_code_message_and_typed_details() -> None:
    status = status_pb2.Status(
        code=5,
        message="no such session",
        details=[
            _packed(error_details_pb2.ErrorInfo(reason="SESSION_NOT_FOUND", domain="agentmesh", metadata={"a": "b"}))
        ],
    )
    assert status_to_json(status) == {
        "code": 5,
        "message": "no such session",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "SESSION_NOT_FOUND",
                "domain": "agentmesh",
                "metadata": {"a": "b"},
            }
        ],
    }


def test_unknown_detail_types_are_passed_through_opaque() -> None:
    status = status_pb2.Status(code=13, details=[any_pb2.Any(type_url="type.example.com/x.Unknown", value=b"\x01")])
    assert status_to_json(status)["details"] == [{"@type": "type.example.com/x.Unknown", "value": "AQ=="}]


def test_unauthenticated_answers_401_with_www_authenticate() -> None:
    response = status_response(status_pb2.Status(code=16, message="missing token"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert json.loads(response.body) == {"code": 16, "message": "missing token", "details": []}


def test_retry_info_becomes_retry_after() -> None:
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=7, nanos=1))
    response = status_response(status_pb2.Status(code=8, message="slow down", details=[_packed(retry)]))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "8"


def test_gateway_error_with_its_own_http_status() -> None:
    error = GatewayError(grpc.StatusCode.INVALID_ARGUMENT, "too big", reason="PAYLOAD_TOO_LARGE", http_status=413)
    response = error_response(error)
    body = json.loads(response.body)
    assert response.status_code == 413
    assert body["code"] == 3
    assert body["details"][0]["reason"] == "PAYLOAD_TOO_LARGE"


class FakeRpcError(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailers: tuple[tuple[str, bytes | str], ...]) -> None:
        self._code, self._details, self._trailers = code, details, trailers

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, bytes | str], ...]:
        return self._trailers


def test_rich_status_is_read_from_the_trailer() -> None:
    rich = status_pb2.Status(
        code=6, message="taken", details=[_packed(error_details_pb2.ErrorInfo(reason="EMAIL_TAKEN"))]
    )
    error = FakeRpcError(
        grpc.StatusCode.ALREADY_EXISTS, "taken", (("grpc-status-details-bin", rich.SerializeToString()),)
    )
    assert status_from_rpc_error(error) == rich


def test_a_trailer_that_disagrees_with_the_call_code_is_ignored() -> None:
    lying = status_pb2.Status(code=0, message="fine")
    error = FakeRpcError(grpc.StatusCode.INTERNAL, "broken", (("grpc-status-details-bin", lying.SerializeToString()),))
    assert status_from_rpc_error(error) == status_pb2.Status(code=13, message="broken")
