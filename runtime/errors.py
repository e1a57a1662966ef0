"""Domain errors with meaning, and their one mapping to gRPC status.

Servicers and domain code raise these; the server interceptor turns them into a status
code, a message safe for clients, and a `google.rpc.ErrorInfo` whose `reason` is a
stable UPPER_SNAKE word clients can branch on. Anything else becomes INTERNAL with no
detail, so no stack trace or internal message ever reaches a client.
"""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "agentmesh"


class DomainError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"

    def __init__(self, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = metadata or {}

    def to_status(self) -> status_pb2.Status:
        info = error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata)
        detail = any_pb2.Any()
        detail.Pack(info)
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=[detail])


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RESOURCE_EXHAUSTED"


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(DomainError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


def internal_status() -> status_pb2.Status:
    return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")


def error_from_rpc(exc: grpc.aio.AioRpcError, *, what: str) -> DomainError:
    """Re-raise an upstream's client-visible failure as our own domain error.

    Codes that describe the caller's request (not found, permission, argument) pass
    through with the upstream's message; transport failures and the hop's own timeout
    become UNAVAILABLE.
    """
    passthrough: dict[grpc.StatusCode, type[DomainError]] = {
        grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
        grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
        grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
        grpc.StatusCode.NOT_FOUND: NotFound,
        grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
        grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
        grpc.StatusCode.ABORTED: Aborted,
        grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
        # Not DEADLINE_EXCEEDED: deadlines are not propagated, so an upstream's is the hop's
        # own timeout, and the caller's deadline was not exceeded: the upstream is unavailable.
    }
    kind = passthrough.get(exc.code())
    if kind is not None:
        # The upstream's reason is the contract clients branch on (SESSION_NOT_FOUND, not
        # the code's generic NOT_FOUND): it survives the hop, with its metadata.
        info = upstream_error_info(exc)
        if info is None:
            return kind(exc.details() or what)
        return kind(exc.details() or what, reason=info.reason or None, metadata=dict(info.metadata))
    return Unavailable(f"{what} is unavailable")


STATUS_DETAILS_KEY = "grpc-status-details-bin"


def upstream_error_info(exc: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo | None:
    """The `google.rpc.ErrorInfo` in a failed call's `grpc-status-details-bin` trailer, if
    it is there, parses, and agrees with the call's status code (else it is not ours)."""
    for key, value in exc.trailing_metadata() or ():
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except DecodeError:
            return None
        if status.code != exc.code().value[0]:
            return None
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            # Unpack is False for a detail of another type.
            if detail.Unpack(info):
                return info
    return None


class Cancelled(DomainError):
    code = grpc.StatusCode.CANCELLED
    default_reason = "CANCELLED"


def error_for_status(
    code: grpc.StatusCode, message: str, *, reason: str | None = None, metadata: dict[str, str] | None = None
) -> DomainError:
    """The domain error a recorded status stands for (e.g. a run's last event), so a call
    that reports it ends with the same code and reason."""
    kinds: list[type[DomainError]] = [
        InvalidArgument,
        Unauthenticated,
        PermissionDenied,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Cancelled,
    ]
    for kind in kinds:
        if kind.code == code:
            return kind(message, reason=reason, metadata=metadata)
    return DomainError(message, reason=reason, metadata=metadata)
