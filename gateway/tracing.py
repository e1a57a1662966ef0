"""The HTTP side of tracing: one SERVER span per request, continuing the client's W3C
`traceparent`, parent of the gRPC calls the request makes (runtime.tracing does the rest)."""

from __future__ import annotations

from collections.abc import MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runtime.tracing import tracer


def _route_of(scope: Scope) -> str:
    state = scope.get("state") or {}
    return str(state.get("route_template") or scope.get("path", ""))


class TraceContextMiddleware:
    """ASGI middleware: one SERVER span per HTTP request, continuing the client's W3C
    `traceparent` when it sends one. Named `METHOD route-template` once the router set
    the template (raw paths would make span names unbounded)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier: MutableMapping[str, str] = dict(Headers(scope=scope).items())
        parent = propagate.extract(carrier)
        method = str(scope.get("method", "GET"))
        span = tracer().start_span(
            f"{method} {scope.get('path', '')}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": str(scope.get("path", ""))},
        )
        status_code = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
            await send(message)

        token = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            await self.app(scope, receive, send_with_status)
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            route = _route_of(scope)
            span.update_name(f"{method} {route}")
            span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status_code)
            if status_code >= 500:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
            otel_context.detach(token)
