"""Request ids, security headers and Prometheus metrics, as one ASGI middleware."""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.upstreams import request_id
from runtime.logging import get_logger

log = get_logger("gateway.access")

UNMATCHED_ROUTE = "unmatched"

# The chat and docs pages load only their own files; user text never becomes markup, and inline
# script is refused outright so an injected <script> could not run even if it reached the DOM.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class GatewayMetrics:
    def __init__(self) -> None:
        # A registry per app, so tests can build several apps in one process.
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests handled, by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time from request to the last byte of the response (whole stream for SSE), by route.",
            ["route", "method", "status"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=self.registry,
        )

        self.shed = Counter(
            "gateway_requests_shed_total",
            "Requests refused with 503 because every admission slot of their route class stayed busy.",
            ["route_class"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "gateway_requests_in_flight",
            "Requests holding an admission slot (upstream call under way), by route class.",
            ["route_class"],
            registry=self.registry,
        )
        self.admission_limit = Gauge(
            "gateway_admission_limit",
            "Admission slots of a route class now: the configured limit, lowered while latency is inflated.",
            ["route_class"],
            registry=self.registry,
        )

    def track_admission(self, route_class: str, in_flight: Callable[[], float], limit: Callable[[], float]) -> None:
        """A class's gauges read its gate when scraped; nothing to update per request."""
        self.in_flight.labels(route_class).set_function(in_flight)
        self.admission_limit.labels(route_class).set_function(limit)

    def response(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


def set_route_template(scope: Scope, template: str) -> None:
    """Label this request's metrics with a template; raw paths would explode label cardinality."""
    scope.setdefault("state", {})["route_template"] = template


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(Headers(scope=scope))
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status = 500

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = rid
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            route = scope.get("state", {}).get("route_template", UNMATCHED_ROUTE)
            labels = (route, scope["method"], str(status))
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(*labels).inc()
            self.metrics.duration.labels(*labels).observe(elapsed)
            log.info(
                "http_request",
                method=scope["method"],
                route=route,
                status=status,
                duration_ms=round(elapsed * 1000, 1),
                request_id=rid,
            )
