"""The transcoding handler: one HTTP request -> one gRPC call -> one HTTP response.

Every way a request can be malformed (path, query, headers, body, the values in it) ends as a 4xx
google.rpc.Status built here, never as an exception that escapes to a 500 with a traceback. A
failure the handler did not foresee still answers a Status (500, INTERNAL) and logs only its type
and where it happened: request content never reaches the log.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

import grpc
from google.protobuf import duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from starlette.datastructures import Headers
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.admin import SigningKeys, UpstreamMonitor
from gateway.admission import AdmissionControl, Overloaded, ReleasedWhenSent, Slot
from gateway.descriptors import ApiDescriptors, HttpBinding
from gateway.errors import GatewayError, StatusResponse, error_response, status_from_rpc_error, status_response
from gateway.identity import TokenVerifier, caller_key
from gateway.oauth2 import NO_STORE, is_oauth2_form, oauth2_error_response
from gateway.observability import GatewayMetrics, set_route_template
from gateway.ratelimit import RateLimitDecision, RateLimiter
from gateway.routing import NoRoute, Router
from gateway.settings import GatewaySettings
from gateway.streaming import (
    FirstRead,
    NewlineDelimitedJson,
    ServerSentEvents,
    UpstreamStreamResponse,
    apply_last_event_id,
    wants_sse,
)
from gateway.transcoding import build_request, media_type, response_json
from gateway.upstreams import (
    NoUpstream,
    UpstreamPool,
    choose_timeout,
    client_address,
    outgoing_metadata,
    parse_timeout,
)
from runtime.errors import InvalidArgument
from runtime.logging import get_logger
from runtime.request_checks import check_request

log = get_logger(__name__)


@dataclass
class Gateway:
    """Everything a request handler needs, built once at start-up."""

    settings: GatewaySettings
    api: ApiDescriptors
    router: Router[HttpBinding]
    upstreams: UpstreamPool
    limiter: RateLimiter
    metrics: GatewayMetrics
    openapi: dict[str, Any]
    keys: SigningKeys
    monitor: UpstreamMonitor
    admission: AdmissionControl
    verifier: TokenVerifier | None = None
    metrics_address: str = ""

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            # No route is a WebSocket; refusing the handshake answers 403 instead of a crash.
            await send({"type": "websocket.close", "code": 1008})
            return
        response = await self.handle(Request(scope, receive))
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        oauth2 = False
        try:
            path = request_path(request.scope)
            resolved = self.router.resolve(request.method, path)
            if isinstance(resolved, NoRoute):
                return no_route(request.method, request.scope["path"], resolved)
            binding = resolved.route
            set_route_template(request.scope, binding.template.source)
            oauth2 = is_oauth2_form(binding.rpc_name, media_type(request.headers.get("content-type")))
            response = await self._handle(binding, resolved.variables, request)
        except GatewayError as exc:
            response = error_response(exc)
        except Exception as exc:
            # A bug, not bad input: say so without echoing the request, and keep the stack's
            # shape (file, line, function) for whoever reads the log, not its values.
            log.error(
                "gateway_unexpected_error",
                error=type(exc).__name__,
                route=request.scope.get("state", {}).get("route_template", ""),
                stack=traceback.format_tb(exc.__traceback__)[-5:],
            )
            response = error_response(GatewayError(grpc.StatusCode.INTERNAL, "internal error", reason="INTERNAL"))
        if oauth2:
            return _as_oauth2(response)
        return response

    async def _handle(self, binding: HttpBinding, variables: dict[str, str], request: Request) -> Response:
        credential = single_credential(request.headers)
        address = client_address(
            request.client.host if request.client else None,
            request.headers.get("x-forwarded-for"),
            self.settings.trusted_networks,
        )
        route_class = self.limiter.class_for(binding.rpc_name, binding.http_method)
        decision = await self._rate_limit(route_class, credential, address.client)
        limit_headers = decision.headers() if decision else {}
        if decision is not None and not decision.allowed:
            return error_response(
                GatewayError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"rate limit of {decision.limit} requests exceeded; retry in {decision.reset_after}s",
                    reason="RATE_LIMITED",
                    metadata={"route_class": route_class},
                    headers=limit_headers,
                )
            )
        try:
            message = await self._request_message(binding, variables, request)
            metadata = outgoing_metadata(
                request.headers.items(), request.scope["state"]["request_id"], address.forwarded_for, credential
            )
            requested = parse_timeout(request.headers)
            # Admitted only once the request is read and valid: a slow upload or a 400 holds no slot.
            slot = await self._admit(route_class)
            return await self._call_upstream(slot, binding, message, metadata, requested, request, limit_headers)
        except GatewayError as exc:
            exc.headers = {**limit_headers, **exc.headers}
            return error_response(exc)
        except NoUpstream:
            return error_response(
                GatewayError(
                    grpc.StatusCode.UNAVAILABLE,
                    f"no upstream address is configured for {binding.service_name}",
                    reason="UPSTREAM_NOT_CONFIGURED",
                    headers=limit_headers,
                )
            )

    async def _rate_limit(self, route_class: str, credential: str | None, client: str) -> RateLimitDecision | None:
        if not self.settings.rate_limit_enabled:
            return None
        # The credential the services will see (single_credential), so the bucket is their caller's.
        caller = await caller_key(self.verifier, credential, client)
        return await self.limiter.hit(route_class, caller)

    async def _admit(self, route_class: str) -> Slot:
        try:
            return await self.admission.admit(route_class)
        except Overloaded as exc:
            raise overloaded_error(exc) from None

    async def _call_upstream(
        self,
        slot: Slot,
        binding: HttpBinding,
        message: Message,
        metadata: list[tuple[str, str]],
        requested: float | None,
        request: Request,
        headers: dict[str, str],
    ) -> Response | ReleasedWhenSent:
        """The upstream call under the admission slot; a relayed stream keeps it until it ends."""
        handed_on = False
        try:
            if not binding.server_streaming:
                return await self._unary(binding, message, metadata, requested, headers)
            response = await self._stream(binding, message, metadata, requested, request, headers)
            if isinstance(response, UpstreamStreamResponse):
                handed_on = True
                return ReleasedWhenSent(response, slot)
            return response
        finally:
            if not handed_on:
                slot.release()

    async def _request_message(self, binding: HttpBinding, variables: dict[str, str], request: Request) -> Message:
        body = b""
        form: list[tuple[str, str]] | None = None
        content_type = request.headers.get("content-type")
        if binding.body:
            if binding.client_streaming:
                raise GatewayError(
                    grpc.StatusCode.UNIMPLEMENTED, "client-streaming RPCs are not served over HTTP", http_status=501
                )
            body = await read_body(request, self.settings.gateway_max_body_bytes)
            if media_type(content_type) == "multipart/form-data" and binding.body == "*":
                form = await multipart_fields(request.headers, body)
        query = request.scope.get("query_string", b"").decode("latin-1")
        try:
            message = build_request(binding, variables, query, body, content_type, form)
            if binding.server_streaming:
                apply_last_event_id(message, request.headers.get("last-event-id"))
        except (ValueError, TypeError, RecursionError, UnicodeError) as exc:
            raise GatewayError(
                grpc.StatusCode.INVALID_ARGUMENT, f"invalid request: {exc}", reason="INVALID_FIELD_VALUE"
            ) from None
        try:
            # The services run the same check; doing it here spares the hop and the log line.
            check_request(message)
        except InvalidArgument as exc:
            raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, exc.message, reason=exc.reason) from None
        return message

    async def _unary(
        self,
        binding: HttpBinding,
        message: Message,
        metadata: list[tuple[str, str]],
        requested: float | None,
        headers: dict[str, str],
    ) -> Response:
        timeout = choose_timeout(requested, self.settings.gateway_unary_timeout, self.settings.gateway_max_timeout)
        try:
            reply = await self.upstreams.unary(binding)(message, timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            return status_response(status_from_rpc_error(exc), headers=headers)
        body = response_json(reply, binding.response_body, emit_unpopulated=self.settings.gateway_emit_unpopulated)
        return Response(
            json.dumps(body, separators=(",", ":"), ensure_ascii=False),
            media_type="application/json",
            headers=headers,
        )

    async def _stream(
        self,
        binding: HttpBinding,
        message: Message,
        metadata: list[tuple[str, str]],
        requested: float | None,
        request: Request,
        headers: dict[str, str],
    ) -> Response | UpstreamStreamResponse:
        timeout = choose_timeout(requested, self.settings.gateway_stream_timeout, self.settings.gateway_max_timeout)
        call = self.upstreams.server_stream(binding)(message, timeout=timeout, metadata=metadata)
        first = await FirstRead.wait(call, within=min(self.settings.gateway_sse_heartbeat, 5.0))
        failed = first.failed_status()
        if failed is not None:
            return status_response(failed, headers=headers)
        stream_format = ServerSentEvents() if wants_sse(request.headers.get("accept")) else NewlineDelimitedJson()
        emit = self.settings.gateway_emit_unpopulated
        return UpstreamStreamResponse(
            call,
            first,
            stream_format,
            lambda item: response_json(item, binding.response_body, emit_unpopulated=emit),
            self.settings.gateway_sse_heartbeat,
            headers,
        )

    async def ready(self) -> bool:
        """The gateway serves (it is answering this) and can verify tokens. Upstream health is
        not readiness: it is a metric (gateway_upstream_up) and /upstreamz on the metrics port."""
        return await self.keys.ready()


def overloaded_error(exc: Overloaded) -> GatewayError:
    """503 with Retry-After, and the same hint as a RetryInfo detail for gRPC-minded clients."""
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        f"the gateway is at capacity for {exc.route_class} requests; retry in {exc.retry_after_s}s",
        reason="OVERLOADED",
        metadata={"route_class": exc.route_class, "retry_after_s": str(exc.retry_after_s)},
        details=[error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=exc.retry_after_s))],
        headers={"Retry-After": str(exc.retry_after_s)},
    )


def request_path(scope: Scope) -> str:
    """The still-encoded path; 400 when it does not percent-decode to UTF-8 text."""
    raw_path = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    path = raw_path.decode("latin-1").split("?", 1)[0]
    try:
        unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "the request path is not valid UTF-8 once percent-decoded",
            reason="MALFORMED_PATH",
        ) from None
    return path


def single_credential(headers: Headers) -> str | None:
    """The caller's one credential: the `Authorization` header, given at most once.

    Two of them would let the rate limiter key on one and a service read the other.
    """
    values = headers.getlist("authorization")
    if len(values) > 1:
        raise GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT, "send one Authorization header, not several", reason="MALFORMED_HEADER"
        )
    if values and not (values[0].isascii() and values[0].isprintable()):
        # gRPC metadata cannot carry it, so the services would never see what the limiter keyed on.
        raise GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "the Authorization header must be printable ASCII",
            reason="MALFORMED_HEADER",
        )
    return values[0] if values else None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes before reading them all (413)."""
    too_large = GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"request body exceeds {limit} bytes",
        reason="PAYLOAD_TOO_LARGE",
        http_status=413,
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise GatewayError(grpc.StatusCode.CANCELLED, "the client went away", http_status=499) from None
    return b"".join(chunks)


async def multipart_fields(headers: Headers, body: bytes) -> list[tuple[str, str]]:
    """Text fields of a multipart body already read (and size-checked) by read_body."""

    async def once() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(headers, once(), max_files=0, max_fields=200).parse()
    except (MultiPartException, ValueError, KeyError, UnicodeError) as exc:
        raise GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT, f"malformed multipart body: {exc}", reason="MALFORMED_FORM"
        ) from None
    fields: list[tuple[str, str]] = []
    try:
        for key, value in form.multi_items():
            if not isinstance(value, str):
                raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, f"field {key!r}: file uploads are not accepted")
            fields.append((key, value))
    finally:
        await form.close()
    return fields


def no_route(method: str, path: str, resolved: NoRoute) -> Response:
    if resolved.allowed:
        allow = ", ".join(sorted(resolved.allowed | ({"HEAD"} if "GET" in resolved.allowed else set())))
        return error_response(
            GatewayError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"method {method} is not allowed here; allowed: {allow}",
                reason="METHOD_NOT_ALLOWED",
                http_status=405,
                headers={"Allow": allow},
            )
        )
    return error_response(
        GatewayError(grpc.StatusCode.NOT_FOUND, f"no route for {method} {path}", reason="ROUTE_NOT_FOUND")
    )


def _as_oauth2(response: Response) -> Response:
    """A form login's Status error in OAuth2's format; its success with RFC 6749's no-store."""
    if isinstance(response, StatusResponse) and response.status_code >= 400:
        kept = {k: v for k, v in response.headers.items() if k.lower().startswith(("ratelimit-", "retry-after"))}
        return oauth2_error_response(response.rpc_status, kept)
    response.headers.update(NO_STORE)
    return response
