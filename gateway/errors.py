"""gRPC status <-> HTTP: the google.rpc.Status JSON body and the grpc-gateway/Envoy status table."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping

import grpc
from google.protobuf import any_pb2, json_format, symbol_database
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from starlette.responses import Response

ERROR_DOMAIN = "gateway.agentmesh"

# The mapping grpc-gateway (runtime.HTTPStatusFromCode) and Envoy's transcoder share.
HTTP_STATUS_BY_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def http_status_for(code: grpc.StatusCode) -> int:
    return HTTP_STATUS_BY_CODE.get(code, 500)


class GatewayError(Exception):
    """An error the gateway answers itself, in the same Status shape as an upstream error."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        details: Iterable[Message] = (),
        http_status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)
        if reason is not None:
            info = error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=metadata or {})
            self.details.insert(0, info)
        self.http_status = http_status if http_status is not None else http_status_for(code)
        self.headers = dict(headers or {})

    def to_status(self) -> status_pb2.Status:
        return make_status(self.code, self.message, self.details)


def make_status(code: grpc.StatusCode, message: str, details: Iterable[Message] = ()) -> status_pb2.Status:
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status


def code_of(status: status_pb2.Status) -> grpc.StatusCode:
    return _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)


def status_from_rpc_error(error: grpc.RpcError) -> status_pb2.Status:
    """The upstream's google.rpc.Status, from the `grpc-status-details-bin` trailer when present."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else None) or ""
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except Exception:
                break
            # grpc requires the trailer's code to match the call's; trust the call if they differ.
            if status.code == code.value[0]:
                return status
            break
    if code == grpc.StatusCode.UNAVAILABLE and not message:
        message = "upstream unavailable"
    return status_pb2.Status(code=code.value[0], message=message)


def status_to_json(status: status_pb2.Status) -> dict[str, object]:
    """`{"code", "message", "details"}` with every detail as JSON Any (`@type` plus its fields)."""
    return {
        "code": status.code,
        "message": status.message,
        "details": [_any_to_json(detail) for detail in status.details],
    }


def _any_to_json(detail: any_pb2.Any) -> dict[str, object]:
    type_name = detail.type_url.rsplit("/", 1)[-1]
    try:
        message_class = symbol_database.Default().GetSymbol(type_name)
    except KeyError:
        # A detail type this process has never heard of still reaches the client, opaque.
        return {"@type": detail.type_url, "value": base64.b64encode(detail.value).decode()}
    inner = message_class.FromString(detail.value)
    body = json_format.MessageToDict(inner, preserving_proto_field_name=False)
    return {"@type": detail.type_url, **body}


class StatusResponse(Response):
    """A google.rpc.Status JSON response that keeps the Status, for callers that answer in
    another format (the OAuth2 token endpoint)."""

    def __init__(self, status: status_pb2.Status, content: str, status_code: int, headers: Mapping[str, str]):
        super().__init__(content, status_code=status_code, media_type="application/json", headers=dict(headers))
        self.rpc_status = status


def status_response(
    status: status_pb2.Status, *, http_status: int | None = None, headers: Mapping[str, str] | None = None
) -> StatusResponse:
    code = code_of(status)
    response_headers = dict(headers or {})
    if code == grpc.StatusCode.UNAUTHENTICATED:
        response_headers.setdefault("WWW-Authenticate", 'Bearer realm="agentmesh"')
    retry_after = retry_after_hint(status)
    if retry_after is not None:
        response_headers.setdefault("Retry-After", str(retry_after))
    return StatusResponse(
        status,
        json.dumps(status_to_json(status), separators=(",", ":")),
        http_status if http_status is not None else http_status_for(code),
        response_headers,
    )


def retry_after_hint(status: status_pb2.Status) -> int | None:
    """Whole seconds (>= 1) the Status asks the client to wait: its RetryInfo, else, for
    RESOURCE_EXHAUSTED and UNAVAILABLE, an ErrorInfo's `retry_after_s` (services such as the
    auth throttle put it there, and a service that sets only that one still gets the header)."""
    from_metadata: int | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            return max(1, retry.retry_delay.seconds + (1 if retry.retry_delay.nanos else 0))
        if from_metadata is None and detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            from_metadata = _whole_seconds(info.metadata.get("retry_after_s", ""))
    if code_of(status) in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
        return from_metadata
    return None


def _whole_seconds(text: str) -> int | None:
    try:
        seconds = float(text)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    # An hour at most: a hint is advice, and a huge one would park the client for good.
    return min(3600, max(1, math.ceil(seconds)))


def error_response(error: GatewayError) -> StatusResponse:
    return status_response(error.to_status(), http_status=error.http_status, headers=error.headers)


def invalid_argument(message: str, reason: str = "INVALID_ARGUMENT") -> GatewayError:
    return GatewayError(grpc.StatusCode.INVALID_ARGUMENT, message, reason=reason)
