"""The one mapping from domain errors to gRPC status (runtime/errors.py): pure rules, no processes.
How an upstream's reason survives a hop is in tests/mesh/test_error_reasons.py."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from runtime.errors import (
    ERROR_DOMAIN,
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    error_from_rpc,
    internal_status,
)

KINDS: list[tuple[type[DomainError], grpc.StatusCode]] = [
    (DomainError, grpc.StatusCode.INTERNAL),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (Aborted, grpc.StatusCode.ABORTED),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
]


def error_info(error: DomainError) -> error_details_pb2.ErrorInfo:
    status = error.to_status()
    assert len(status.details) == 1
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return info


@pytest.mark.parametrize(("kind", "code"), KINDS, ids=[kind.__name__ for kind, _ in KINDS])
def test_each_error_has_its_code_and_the_code_name_as_default_reason(
    kind: type[DomainError], code: grpc.StatusCode
) -> None:
    error = kind("what went wrong")
    status = error.to_status()
    assert (status.code, status.message) == (code.value[0], "what went wrong")
    assert error_info(error).reason == code.name
    assert error_info(error).domain == ERROR_DOMAIN


def test_a_specific_reason_and_metadata_travel_in_the_error_info() -> None:
    error = NotFound("no such session", reason="SESSION_NOT_FOUND", metadata={"session_id": "s-1"})
    info = error_info(error)
    assert (info.reason, dict(info.metadata)) == ("SESSION_NOT_FOUND", {"session_id": "s-1"})


def test_the_internal_status_says_nothing_about_the_cause() -> None:
    status = internal_status()
    assert (status.code, status.message, list(status.details)) == (code_pb2.INTERNAL, "internal error", [])


def failed_call(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


# Codes that describe the caller's request: the same kind comes back, with the upstream's message.
PASSTHROUGH = [(kind, code) for kind, code in KINDS if kind not in (DomainError, Unavailable, DeadlineExceeded)]


@pytest.mark.parametrize(("kind", "code"), PASSTHROUGH, ids=[code.name for _, code in PASSTHROUGH])
def test_an_upstream_failure_about_the_request_passes_through(kind: type[DomainError], code: grpc.StatusCode) -> None:
    error = error_from_rpc(failed_call(code, "upstream says no"), what="sessions")
    assert type(error) is kind
    assert (error.message, error.reason) == ("upstream says no", code.name)


def test_an_upstream_failure_without_a_message_names_the_upstream() -> None:
    assert error_from_rpc(failed_call(grpc.StatusCode.NOT_FOUND, ""), what="sessions").message == "sessions"


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        # The hop's own timeout, not the caller's deadline (deadlines are not propagated).
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DATA_LOSS,
    ],
)
def test_any_other_upstream_failure_is_that_upstream_being_unavailable(code: grpc.StatusCode) -> None:
    error = error_from_rpc(failed_call(code, "stack trace of the upstream"), what="memory")
    assert type(error) is Unavailable
    assert error.message == "memory is unavailable"  # the upstream's own message is not relayed
