"""The one server interceptor every service runs: request context for logs,
authentication, Prometheus metrics, and the mapping from domain errors to status.

Health and reflection (grpc.* services) pass through untouched so probes never need a
token and never count as traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, TypeVar, cast

import grpc
import structlog
from grpc_status import rpc_status

from runtime import metrics
from runtime.database_errors import database_unavailable
from runtime.errors import DomainError, PermissionDenied, Unauthenticated, Unavailable, internal_status
from runtime.logging import get_logger
from runtime.principal import Principal, reset_principal, set_principal
from runtime.request_checks import crash_report, tolerant_deserializer, validate_request
from runtime.tokens import AccessTokenVerifier

log = get_logger(__name__)

BEARER = "bearer "
# Honoured only when the token is a service token (runtime.service_identity).
ON_BEHALF_OF = "x-on-behalf-of"

# grpc.aio.ServerInterceptor.intercept_service is generic over the handler's message types;
# the interceptor keeps the response serializer and wraps the rest whatever they are.
_Request = TypeVar("_Request")
_Response = TypeVar("_Response")
# Every servicer context this module sees: the messages are the generated classes, unknown here.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"


class RuntimeInterceptor(grpc.aio.ServerInterceptor):
    """`public_methods` and `service_methods` are gRPC paths (`/pkg.Service/Method`); serve()
    takes them from the contracts' method options (runtime.rpc_policy via Mount)."""

    def __init__(
        self,
        verifier: AccessTokenVerifier,
        public_methods: frozenset[str],
        service_methods: frozenset[str] = frozenset(),
    ) -> None:
        self._verifier = verifier
        self._public_methods = public_methods
        self.service_methods = service_methods

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[_Request, _Response] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[_Request, _Response] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith("/grpc."):
            return handler
        service, _, name = method[1:].partition("/")
        public = method in self._public_methods
        # The casts below make up for the stubs, which type handlers as the synchronous server
        # calls them (returning the response, or an Iterator of responses); under grpc.aio a
        # unary handler is a coroutine function and a server-streaming one an async generator.
        if handler.unary_unary is not None:
            call = _Call(self, method, service, name, public, "unary")
            unary = cast("Callable[..., Awaitable[Any]]", handler.unary_unary)
            return grpc.unary_unary_rpc_method_handler(
                call.wrap_unary(unary),
                request_deserializer=tolerant_deserializer(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            call = _Call(self, method, service, name, public, "server_stream")
            stream = cast("Callable[..., AsyncIterator[Any]]", handler.unary_stream)
            return grpc.unary_stream_rpc_method_handler(
                call.wrap_stream(stream),
                request_deserializer=tolerant_deserializer(handler.request_deserializer),
                response_serializer=handler.response_serializer,
            )
        return handler  # client/bidi streaming: none in our contracts

    async def authenticate(self, metadata: dict[str, str], public: bool) -> Principal | None:
        header = metadata.get("authorization", "")
        if public:
            return None
        if not header.lower().startswith(BEARER):
            raise Unauthenticated("a bearer access token is required", reason="TOKEN_MISSING")
        principal = await self._verifier.verify(header[len(BEARER) :].strip())
        on_behalf_of = metadata.get(ON_BEHALF_OF)
        if on_behalf_of and principal.is_service:
            principal = dataclasses.replace(principal, user_id=on_behalf_of, roles=frozenset({"user"}))
        return principal


DATABASE_UNAVAILABLE = Unavailable(
    "the database is not answering right now; try again shortly", reason="DATABASE_UNAVAILABLE"
)


def _status_code(exc: BaseException) -> grpc.StatusCode:
    if isinstance(exc, DomainError):
        return exc.code
    return grpc.StatusCode.UNAVAILABLE if database_unavailable(exc) else grpc.StatusCode.INTERNAL


class _Call:
    """Per-method wrapper; holds the labels so the hot path does no string work."""

    def __init__(self, owner: RuntimeInterceptor, method: str, service: str, name: str, public: bool, kind: str):
        self._owner = owner
        self._kind = kind
        self._method = method
        self._public = public
        self._service_only = method in owner.service_methods
        self._labels = {"grpc_service": service, "grpc_method": name}
        # Metric children resolved once per method: label lookups are measurable per call.
        self._started = metrics.grpc_server_started_total.labels(grpc_type=kind, **self._labels)
        self._seconds = metrics.grpc_server_handling_seconds.labels(grpc_type=kind, **self._labels)
        self._sent = metrics.grpc_server_msg_sent_total.labels(grpc_type=kind, **self._labels)
        self._handled: dict[grpc.StatusCode, Any] = {}

    def _begin(self, context: Context) -> dict[str, str]:
        self._started.inc()
        metadata = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        structlog.contextvars.bind_contextvars(
            request_id=metadata.get("x-request-id") or uuid.uuid4().hex, rpc=self._method
        )
        return metadata

    def _finish(self, code: grpc.StatusCode, started: float) -> None:
        handled = self._handled.get(code)
        if handled is None:
            labels = {"grpc_type": self._kind, "grpc_code": code.name, **self._labels}
            handled = metrics.grpc_server_handled_total.labels(**labels)
            self._handled[code] = handled
        handled.inc()
        self._seconds.observe(time.perf_counter() - started)
        structlog.contextvars.unbind_contextvars("request_id", "rpc", "user_id", "session_id")

    async def _fail(self, exc: BaseException, context: Context) -> grpc.StatusCode:
        """Turns an exception into the call's status; returns the code for metrics."""
        if isinstance(exc, DomainError):
            level = log.error if exc.code == grpc.StatusCode.INTERNAL else log.info
            level("rpc_failed", code=exc.code.name, reason=exc.reason, error=exc.message)
            await context.abort_with_status(rpc_status.to_status(exc.to_status()))
        if database_unavailable(exc):
            # Not a bug: the database did not answer within its bounds (or dropped the
            # connection). Clients may retry; the health probe reports it too.
            log.warning("rpc_database_unavailable", error=type(exc).__name__)
            await context.abort_with_status(rpc_status.to_status(DATABASE_UNAVAILABLE.to_status()))
        # Type and stack only: exception messages carry values (user text, SQL parameters).
        log.error("rpc_crashed", **crash_report(exc))
        await context.abort_with_status(rpc_status.to_status(internal_status()))
        raise AssertionError("unreachable")  # abort_with_status always raises

    @contextlib.asynccontextmanager
    async def _rpc(self, context: Context) -> AsyncIterator[None]:
        """One RPC's frame: log context, caller, metrics, and the status an exception maps to."""
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            metadata = self._begin(context)
            principal = await self._owner.authenticate(metadata, self._public)
            if self._service_only and (principal is None or not principal.is_service):
                raise PermissionDenied("this call is reserved for services", reason="SERVICE_ONLY")
            token = set_principal(principal)
            if principal is not None:
                structlog.contextvars.bind_contextvars(user_id=principal.user_id)
            try:
                yield
            finally:
                # A stream closed from another task (server shutdown finalising it) runs this in a
                # context that never set the principal: nothing to reset there.
                with contextlib.suppress(ValueError):
                    reset_principal(token)
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED
            raise
        except grpc.aio.AbortError:
            # The stubs promise a StatusCode; grpc.aio gives None while none is set (an
            # AbortError that did not come from this call's context).
            code = cast("grpc.StatusCode | None", context.code()) or grpc.StatusCode.UNKNOWN
            raise
        except Exception as exc:
            code = _status_code(exc)
            await self._fail(exc, context)
        finally:
            self._finish(code, started)

    def wrap_unary(self, behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def unary(request: Any, context: Context) -> Any:
            async with self._rpc(context):
                # After authentication: an anonymous caller learns nothing about field rules.
                validate_request(request)
                return await behavior(request, context)

        return unary

    def wrap_stream(self, behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            async with self._rpc(context):
                validate_request(request)
                async for message in behavior(request, context):
                    self._sent.inc()
                    yield message

        return stream
