"""OpenTelemetry: one trace per request across the gateway and every gRPC hop.

W3C trace context (`traceparent`, `tracestate`) travels in gRPC metadata: the server
interceptor continues the caller's trace, instrumented client channels inject the
current span into every outgoing call. Spans are exported over OTLP/gRPC only when
OTEL_EXPORTER_OTLP_ENDPOINT is set; without it nothing is installed and every helper
here is a no-op (the API's default tracer), so tracing never breaks a service.

- gRPC services: `serve()` calls `configure_tracing(settings, name)` and adds the
  interceptors it returns; `shutdown_tracing()` flushes at exit.
- the gateway: `configure_gateway_tracing()` once before creating channels; its own
  `gateway.tracing.TraceContextMiddleware` makes each HTTP request a server span.
- the agent: `with llm_span(model) as span:` around each model call (the LLM is reached
  over HTTP by langchain-openai, which no instrumentation here covers).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import grpc
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.settings import CommonSettings, TracesSampler

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.sampling import Sampler

INSTRUMENTATION_NAME = "agentmesh"
# W3C trace context keys; gRPC metadata keys are lower case like HTTP/2 headers.
TRACE_CONTEXT_KEYS = ("traceparent", "tracestate")

_lock = threading.Lock()
_provider: Any = None


class TracingSettings(BaseSettings):
    """The tracing settings, read where the tracer provider is installed (services and gateway)."""

    model_config = SettingsConfigDict(extra="ignore")

    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = ""
    # The SDK's own variables, validated here: an unknown sampler name would otherwise
    # fall back to sampling every trace. OTEL_RESOURCE_ATTRIBUTES (pod, namespace,
    # version from the downward API) is merged into the resource by Resource.create.
    otel_traces_sampler: TracesSampler = "parentbased_always_on"
    otel_traces_sampler_arg: float | None = Field(default=None, ge=0, le=1)
    otel_resource_attributes: str = ""


def sampler_from(settings: TracingSettings) -> Sampler:
    """OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG as the SDK defines them (ratio 1.0
    when the argument is unset); parent-based samplers follow the caller's decision."""
    from opentelemetry.sdk.trace import sampling

    ratio = sampling.TraceIdRatioBased(
        1.0 if settings.otel_traces_sampler_arg is None else settings.otel_traces_sampler_arg
    )
    root: Sampler = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "traceidratio": ratio,
    }[settings.otel_traces_sampler.removeprefix("parentbased_")]
    return sampling.ParentBased(root) if settings.otel_traces_sampler.startswith("parentbased_") else root


def _not_health_or_reflection() -> Any:
    # Kubelet probes and Prometheus-driven readiness checks would otherwise produce a
    # trace every few seconds per pod and drown the chat turns.
    from opentelemetry.instrumentation.grpc import filters

    return filters.negate(filters.any_of(filters.health_check(), filters.service_prefix("grpc.reflection.")))


def install_tracer_provider(service_name: str, endpoint: str | None) -> bool:
    """Sets the global tracer provider exporting to `endpoint` and instruments every
    `grpc.aio` channel created from now on. False (and nothing installed) without an
    endpoint. Idempotent: a second call keeps the first provider."""
    global _provider
    if not endpoint:
        return False
    with _lock:
        if _provider is not None:
            return True
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}), sampler=sampler_from(TracingSettings())
        )
        # An http:// endpoint means plaintext (an in-cluster collector); https:// means TLS.
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        # Patches grpc.aio.insecure_channel/secure_channel, so it covers channels opened
        # after this call (clients.open_channel and the gateway's upstream pool look the
        # function up at call time); channels opened before it stay untraced.
        GrpcAioInstrumentorClient(filter_=_not_health_or_reflection()).instrument()
        _provider = provider
    return True


def configure_tracing(settings: CommonSettings, service: str) -> list[grpc.aio.ServerInterceptor]:
    """Installs the tracer provider and returns the server interceptors to add (first)."""
    name = settings.otel_service_name or f"agentmesh-{service}"
    if not install_tracer_provider(name, settings.otel_exporter_otlp_endpoint):
        return []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    return [aio_server_interceptor(filter_=_not_health_or_reflection())]


def configure_gateway_tracing(settings: TracingSettings | None = None) -> bool:
    """For `python -m gateway`: reads OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_SERVICE_NAME."""
    settings = settings or TracingSettings()
    return install_tracer_provider(
        settings.otel_service_name or "agentmesh-gateway", settings.otel_exporter_otlp_endpoint
    )


def shutdown_tracing() -> None:
    """Flushes buffered spans (bounded by the exporter's timeout) and stops exporting."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is not None:
        provider.shutdown()


@functools.cache
def tracer() -> trace.Tracer:
    # Once per process: without a provider installed, each get_tracer() looks up an
    # environment variable and builds a proxy (1.4% of the gateway's CPU, once per request).
    # A proxy obtained before install_tracer_provider() hands over to the real tracer after it.
    return trace.get_tracer(INSTRUMENTATION_NAME)


def current_trace_id() -> str | None:
    """32 hex digits of the current trace, or None outside a recorded span."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def inject_trace_context(metadata: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Outgoing gRPC metadata carrying the current span's context in place of any
    `traceparent`/`tracestate` already there (e.g. copied from the HTTP request).
    Outside a span the metadata is returned unchanged."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    if "traceparent" not in carrier:
        return list(metadata)
    kept = [(key, value) for key, value in metadata if key.lower() not in TRACE_CONTEXT_KEYS]
    return kept + sorted(carrier.items())


@contextmanager
def llm_span(model: str, *, operation: str = "chat", system: str = "openai") -> Iterator[Span]:
    """A CLIENT span around one model call, with OpenTelemetry's gen_ai attributes.

    The yielded span takes the outcome: `span.set_attribute("gen_ai.usage.input_tokens",
    n)` / `"gen_ai.usage.output_tokens"` / `"gen_ai.response.model"`. An exception
    leaving the block is recorded and marks the span as an error. Enter and leave it in
    the same task (not across `yield`s of an async generator consumed elsewhere)."""
    with tracer().start_as_current_span(
        f"{operation} {model}",
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": operation,
            "gen_ai.system": system,
            "gen_ai.request.model": model,
        },
        record_exception=True,
        set_status_on_exception=True,
    ) as span:
        yield span
