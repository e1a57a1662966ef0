"""The ASGI app: transcoded routes from the descriptors, plus health, docs and the chat page.

`/metrics` and upstream detail are not here: they live on the metrics port (gateway/admin.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount, Route, Router
from starlette.staticfiles import StaticFiles

from gateway import pages
from gateway.admin import MetricsServer, SigningKeys, UpstreamMonitor
from gateway.admission import Adaptive, AdmissionControl
from gateway.descriptors import ApiDescriptors, load_descriptor_set
from gateway.handler import Gateway
from gateway.identity import build_token_verifier
from gateway.observability import GatewayMetrics, ObservabilityMiddleware
from gateway.openapi import build_openapi
from gateway.ratelimit import RateLimiter
from gateway.routing import Router as TemplateRouter
from gateway.settings import GatewaySettings, load_gateway_settings
from gateway.tracing import TraceContextMiddleware
from gateway.upstreams import UpstreamPool
from runtime.logging import get_logger

log = get_logger(__name__)

STATIC_DIR = pages.STATIC_DIR
_CORS_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
AUTH_SERVICE = "agentmesh.auth.v1.AuthService"


def upstream_addresses(settings: GatewaySettings, api: ApiDescriptors) -> dict[str, str]:
    addresses = {}
    for service in api.services:
        address = settings.upstream_address(service.full_name)
        if address:
            addresses[service.full_name] = address
        else:
            log.warning("upstream_not_configured", service=service.full_name)
    return addresses


def admission_control(settings: GatewaySettings, api: ApiDescriptors, metrics: GatewayMetrics) -> AdmissionControl:
    """The per-replica admission gates, with a shed counter and an in-flight gauge for every
    class from the start (a class that never sheds still shows 0, so a rate() query works)."""
    admission = AdmissionControl(
        settings.admission_limits(),
        max_wait_ms=settings.admission_max_wait_ms,
        retry_after_max_s=settings.admission_retry_after_max_s,
        adaptive=Adaptive(
            min_limit=settings.admission_min_limit,
            tolerance=settings.admission_latency_tolerance,
            slack_s=settings.admission_latency_slack_ms / 1000,
            baseline_s=settings.admission_baseline_s,
        )
        if settings.admission_adaptive
        else None,
        on_shed=lambda route_class: metrics.shed.labels(route_class).inc(),
    )
    for route_class in sorted(set(settings.admission_limits()) | set(api.rate_limit_classes().values())):
        gate = admission.gate(route_class)
        metrics.shed.labels(route_class)
        metrics.track_admission(route_class, lambda gate=gate: gate.in_flight, lambda gate=gate: gate.limit)
    return admission


def create_app(settings: GatewaySettings | None = None) -> Starlette:
    settings = settings or load_gateway_settings()
    api = load_descriptor_set(settings.gateway_descriptor_set)
    upstreams = UpstreamPool(upstream_addresses(settings, api))
    metrics = GatewayMetrics()
    keys = SigningKeys(upstreams, settings.gateway_readiness_timeout)
    admission = admission_control(settings, api, metrics)
    gateway = Gateway(
        settings=settings,
        api=api,
        router=TemplateRouter(api.bindings),
        upstreams=upstreams,
        limiter=RateLimiter(
            settings.rate_limits(),
            # Each RPC's class is declared in its contract ((agentmesh.options.v1.rate_limit_class));
            # the settings only say how many requests each class allows.
            api.rate_limit_classes(),
            storage_url=settings.rate_limit_storage_url,
            key_prefix=settings.rate_limit_key_prefix,
        ),
        metrics=metrics,
        openapi=build_openapi(
            api, title="agentmesh API", version="v1", emit_unpopulated=settings.gateway_emit_unpopulated
        ),
        keys=keys,
        monitor=UpstreamMonitor(
            upstreams,
            metrics.registry,
            keys,
            interval_s=settings.gateway_upstream_check_interval_s,
            timeout_s=settings.gateway_readiness_timeout,
        ),
        admission=admission,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if settings.rate_limit_enabled and AUTH_SERVICE in upstreams.addresses:
            gateway.verifier = build_token_verifier(upstreams.channel_for(AUTH_SERVICE), settings)
        metrics_server = MetricsServer(
            settings.gateway_metrics_host, settings.gateway_metrics_port, metrics.registry, gateway.monitor.detail
        )
        metrics_server.start()
        gateway.metrics_address = metrics_server.address
        gateway.monitor.start()
        try:
            yield
        finally:
            await gateway.monitor.stop()
            metrics_server.stop()
            await upstreams.close()
            await gateway.limiter.close()

    routes = [
        Route("/healthz", pages.healthz, methods=["GET"]),
        Route("/readyz", pages.readyz(gateway), methods=["GET"]),
        Route("/openapi.json", pages.openapi(gateway), methods=["GET"]),
        Route("/", pages.static_page("index.html", "/"), methods=["GET"]),
        Route("/docs", pages.static_page("docs.html", "/docs"), methods=["GET"]),
        Route("/docs/", pages.relative_redirect("/docs", "/docs/"), methods=["GET"]),
        Mount("/static", pages.Labelled("/static", StaticFiles(directory=STATIC_DIR)), name="static"),
    ]
    app = Starlette(
        lifespan=lifespan,
        exception_handlers={HTTPException: pages.http_exception_as_status},
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
                    "last-event-id",
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
    # 404 and 405 are decided by the http rules and always answer a Status body. No slash
    # redirects: Starlette builds them from the Host header (an open redirect).
    app.router = Router(routes, redirect_slashes=False, default=gateway.asgi, lifespan=lifespan)
    app.state.gateway = gateway
    return app
