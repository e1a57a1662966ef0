"""OpenTelemetry: W3C trace context across every gRPC hop, exported over OTLP only
when OTEL_EXPORTER_OTLP_ENDPOINT is set; with no endpoint nothing is installed."""

from __future__ import annotations

import grpc

from services.common.settings import CommonSettings

_provider = None


def configure_tracing(settings: CommonSettings, service: str) -> list[grpc.aio.ServerInterceptor]:
    """Installs the tracer provider and returns the server interceptors to add."""
    global _provider
    if not settings.otel_exporter_otlp_endpoint:
        return []
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, aio_server_interceptor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = settings.otel_service_name or f"agentmesh-{service}"
    _provider = TracerProvider(resource=Resource.create({"service.name": name}))
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_exporter_otlp_endpoint)))
    trace.set_tracer_provider(_provider)
    GrpcAioInstrumentorClient().instrument()
    return [aio_server_interceptor()]


def shutdown_tracing() -> None:
    if _provider is not None:
        _provider.shutdown()
