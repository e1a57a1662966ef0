"""The ASGI app: transcoded routes from the descriptors, plus health, metrics, docs and the chat page."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.descriptors import ApiDescriptors, HttpBinding, load_descriptor_set
from gateway.errors import GatewayError, error_response, status_from_rpc_error, status_response
from gateway.identity import TokenVerifier, build_token_verifier, caller_key
from gateway.observability import GatewayMetrics, ObservabilityMiddleware, set_route_template
from gateway.openapi import build_openapi
from gateway.ratelimit import RateLimitDecision, RateLimiter
from gateway.routing import NoRoute, Router
from gateway.settings import DEFAULT_RATE_LIMIT_CLASSES, GatewaySettings, load_gateway_settings
from gateway.streaming import FirstRead, NewlineDelimitedJson, ServerSentEvents, UpstreamStreamResponse, wants_sse
from gateway.transcoding import build_request, media_type, response_json
from gateway.upstreams import (
    NoUpstream,
    UpstreamPool,
    choose_timeout,
    client_address,
    outgoing_metadata,
    parse_timeout,
)
from services.common.logging import get_logger
from services.common.tracing import TraceContextMiddleware

log = get_logger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
_CORS_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]


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
    verifier: TokenVerifier | None = None

    async def asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handle(Request(scope, receive))
        await response(scope, receive, send)

    async def handle(self, request: Request) -> Response:
        raw_path = request.scope.get("raw_path") or request.url.path.encode()
        path = raw_path.decode("latin-1").split("?", 1)[0]
        resolved = self.router.resolve(request.method, path)
        if isinstance(resolved, NoRoute):
            return _no_route(request, resolved)
        binding, variables = resolved.route, resolved.variables
        set_route_template(request.scope, binding.template.source)

        address = client_address(
            request.client.host if request.client else None,
            request.headers.get("x-forwarded-for"),
            self.settings.trusted_networks,
        )
        decision = await self._rate_limit(binding, request, address.client)
        limit_headers = decision.headers() if decision else {}
        if decision is not None and not decision.allowed:
            return error_response(
                GatewayError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"rate limit of {decision.limit} requests exceeded; retry in {decision.reset_after}s",
                    reason="RATE_LIMITED",
                    metadata={"route_class": self.limiter.class_for(binding.rpc_name)},
                    headers=limit_headers,
                )
            )
        try:
            message = await self._request_message(binding, variables, request)
            metadata = outgoing_metadata(
                request.headers.items(), request.scope["state"]["request_id"], address.forwarded_for
            )
            requested = parse_timeout(request.headers)
            if binding.server_streaming:
                return await self._stream(binding, message, metadata, requested, request, limit_headers)
            return await self._unary(binding, message, metadata, requested, limit_headers)
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

    async def _rate_limit(self, binding: HttpBinding, request: Request, client: str) -> RateLimitDecision | None:
        if not self.settings.rate_limit_enabled:
            return None
        route_class = self.limiter.class_for(binding.rpc_name)
        caller = await caller_key(self.verifier, request.headers.get("authorization"), client)
        return await self.limiter.hit(route_class, caller)

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
                form = await _multipart_fields(request, body)
        return build_request(binding, variables, request.url.query, body, content_type, form)

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

    async def readiness(self, request: Request) -> Response:
        services = sorted(self.upstreams.addresses)
        results = await asyncio.gather(
            *(self.upstreams.health(name, self.settings.gateway_readiness_timeout) for name in services)
        )
        upstreams = {name: status for name, status in zip(services, results, strict=True)}
        not_serving = sorted(name for name, status in upstreams.items() if status != "SERVING")
        body = {"status": "ready" if not not_serving else "not ready", "upstreams": upstreams}
        if not_serving:
            body["not_serving"] = not_serving
        return JSONResponse(body, status_code=503 if not_serving else 200)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes before reading them all (413)."""
    too_large = GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        f"request body exceeds {limit} bytes",
        reason="PAYLOAD_TOO_LARGE",
        http_status=413,
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
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
    body = b"".join(chunks)
    # Later readers (the multipart parser) read the cached body instead of the spent stream.
    request._body = body
    return body


async def _multipart_fields(request: Request, body: bytes) -> list[tuple[str, str]]:
    try:
        form = await request.form()
    except Exception as exc:
        raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, f"malformed multipart body: {exc}") from exc
    fields: list[tuple[str, str]] = []
    for key, value in form.multi_items():
        if not isinstance(value, str):
            raise GatewayError(grpc.StatusCode.INVALID_ARGUMENT, f"field {key!r}: file uploads are not accepted")
        fields.append((key, value))
    await form.close()
    return fields


_CODE_BY_HTTP_STATUS = {
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    400: grpc.StatusCode.INVALID_ARGUMENT,
}


async def _http_exception_as_status(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (fixed routes, static files) in the same Status shape as the API."""
    assert isinstance(exc, HTTPException)
    code = _CODE_BY_HTTP_STATUS.get(exc.status_code, grpc.StatusCode.UNKNOWN)
    return error_response(
        GatewayError(code, str(exc.detail), http_status=exc.status_code, headers=dict(exc.headers or {}))
    )


def _no_route(request: Request, resolved: NoRoute) -> Response:
    if resolved.allowed:
        allow = ", ".join(sorted(resolved.allowed | ({"HEAD"} if "GET" in resolved.allowed else set())))
        return error_response(
            GatewayError(
                grpc.StatusCode.UNIMPLEMENTED,
                f"method {request.method} is not allowed here; allowed: {allow}",
                reason="METHOD_NOT_ALLOWED",
                http_status=405,
                headers={"Allow": allow},
            )
        )
    return error_response(
        GatewayError(
            grpc.StatusCode.NOT_FOUND,
            f"no route for {request.method} {request.url.path}",
            reason="ROUTE_NOT_FOUND",
        )
    )


def _static_page(name: str, template: str) -> Callable[[Request], Awaitable[Response]]:
    path = STATIC_DIR / name

    async def page(request: Request) -> Response:
        set_route_template(request.scope, template)
        return FileResponse(path, headers={"cache-control": "no-cache"})

    return page


class _Labelled:
    """Gives a fixed endpoint its metrics label before it runs."""

    def __init__(self, template: str, app: ASGIApp) -> None:
        self.template = template
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        set_route_template(scope, self.template)
        await self.app(scope, receive, send)


def upstream_addresses(settings: GatewaySettings, api: ApiDescriptors) -> dict[str, str]:
    addresses = {}
    for service in api.services:
        address = settings.upstream_address(service.full_name)
        if address:
            addresses[service.full_name] = address
        else:
            log.warning("upstream_not_configured", service=service.full_name)
    return addresses


def create_app(settings: GatewaySettings | None = None) -> Starlette:
    settings = settings or load_gateway_settings()
    api = load_descriptor_set(settings.gateway_descriptor_set)
    upstreams = UpstreamPool(upstream_addresses(settings, api))
    metrics = GatewayMetrics()
    gateway = Gateway(
        settings=settings,
        api=api,
        router=Router(api.bindings),
        upstreams=upstreams,
        limiter=RateLimiter(
            settings.rate_limits(),
            DEFAULT_RATE_LIMIT_CLASSES,
            storage_url=settings.rate_limit_storage_url,
            key_prefix=settings.rate_limit_key_prefix,
        ),
        metrics=metrics,
        openapi=build_openapi(
            api, title="agentmesh API", version="v1", emit_unpopulated=settings.gateway_emit_unpopulated
        ),
    )

    async def healthz(request: Request) -> Response:
        set_route_template(request.scope, "/healthz")
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        set_route_template(request.scope, "/readyz")
        return await gateway.readiness(request)

    async def metrics_endpoint(request: Request) -> Response:
        set_route_template(request.scope, "/metrics")
        return metrics.response(request)

    async def openapi_endpoint(request: Request) -> Response:
        set_route_template(request.scope, "/openapi.json")
        return JSONResponse(gateway.openapi)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        auth = "agentmesh.auth.v1.AuthService"
        if settings.rate_limit_enabled and auth in upstreams.addresses:
            gateway.verifier = build_token_verifier(upstreams.channel_for(auth), settings)
        try:
            yield
        finally:
            await upstreams.close()
            await gateway.limiter.close()

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi_endpoint, methods=["GET"]),
        Route("/", _static_page("index.html", "/"), methods=["GET"]),
        Route("/docs", _static_page("docs.html", "/docs"), methods=["GET"]),
        Mount("/static", _Labelled("/static", StaticFiles(directory=STATIC_DIR)), name="static"),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_exception_as_status},
        middleware=[
            # Outermost: each request is a server span continuing the client's traceparent,
            # and the gRPC calls it makes are its children.
            Middleware(TraceContextMiddleware),
            Middleware(ObservabilityMiddleware, metrics=metrics),
            Middleware(
                CORSMiddleware,
                allow_origins=settings.allowed_origins,
                allow_methods=_CORS_METHODS,
                allow_headers=[
                    "authorization",
                    "content-type",
                    "accept",
                    "x-request-id",
                    "traceparent",
                    "tracestate",
                    "grpc-timeout",
                    "x-request-timeout",
                ],
                expose_headers=[
                    "x-request-id",
                    "retry-after",
                    "ratelimit-limit",
                    "ratelimit-remaining",
                    "ratelimit-reset",
                    "www-authenticate",
                ],
                max_age=600,
            ),
        ],
    )
    # Everything the fixed routes do not claim (any path, any method) goes to the transcoder, so
    # 404 and 405 are decided by the http rules and always answer a Status body.
    app.router.default = gateway.asgi
    app.state.gateway = gateway
    return app
