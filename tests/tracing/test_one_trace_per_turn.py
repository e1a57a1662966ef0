"""One chat turn through the gateway is one trace with spans from every hop: the gateway's
HTTP server span, the agent's RPC, the agent's calls to sessions, memory and evals, and
the LLM call, all exported over OTLP/gRPC to a receiver on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from meshctl.mesh import Mesh
from tests.support.waiting import eventually_sync

ROOT = Path(__file__).resolve().parents[2]


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps every span with its service.name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []
        self._lock = threading.Lock()

    def Export(self, request, context):
        with self._lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), "?"
                )
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((service, span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def by_trace(self, trace_id: bytes) -> list[tuple[str, object]]:
        with self._lock:
            return [(service, span) for service, span in self.spans if span.trace_id == trace_id]


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    servicer = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"http://127.0.0.1:{port}"
    server.stop(None)


@pytest.fixture(scope="module")
def traced_mesh(receiver: tuple[Receiver, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("traced-mesh")
    env = {
        "APP_ENV": "test",
        "BCRYPT_ROUNDS": "4",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver[1],
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "SHUTDOWN_GRACE_S": "5",
    }
    mesh = Mesh(data_dir=base / "data", log_dir=base / "logs", ephemeral_ports=True, extra_env=env)
    try:
        mesh.start()
        yield mesh
    finally:
        mesh.stop()


def test_one_chat_turn_is_one_trace_across_every_hop(traced_mesh: Mesh, receiver: tuple[Receiver, str]) -> None:
    servicer = receiver[0]
    gateway = traced_mesh.gateway_url
    with httpx.Client(base_url=gateway, timeout=60) as http:
        tokens = http.post("/v1/auth/register", json={"email": "trace@example.com", "password": "Tr4ce!pass"}).json()
        auth = {"authorization": f"Bearer {tokens['tokens']['access_token']}"}
        session = http.post("/v1/sessions", json={"name": "traced"}, headers=auth).json()["session"]
        trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
        traceparent = f"00-{trace_id}-00f067aa0ba902b7-01"
        reply = http.post(
            f"/v1/sessions/{session['session_id']}:chat",
            json={"message": {"role": "user", "content": "Hello, remember that I like tea."}},
            headers={**auth, "traceparent": traceparent},
        )
        assert reply.status_code == 200, reply.text
    wanted = {"agentmesh-gateway", "agentmesh-agent", "agentmesh-sessions", "agentmesh-memory", "agentmesh-evals"}

    def exported() -> list[tuple[str, object]]:
        spans = servicer.by_trace(bytes.fromhex(trace_id))
        services = {service for service, _ in spans}
        assert wanted <= services, f"trace {trace_id} has spans from {sorted(services)}"
        assert any(s.name.startswith("chat ") for _, s in spans), "no chat span yet"  # type: ignore[attr-defined]
        return spans

    spans = eventually_sync(exported, timeout_s=30, interval_s=0.3)
    names = {span.name for _, span in spans}  # type: ignore[attr-defined]
    assert "/agentmesh.agent.v1.AgentService/Chat" in names
    assert any(name.startswith("chat ") for name in names), names  # the LLM call (llm_span)
    # One trace: the gateway's server span continues the client's traceparent, and every
    # other span has a parent inside this trace.
    span_ids = {span.span_id for _, span in spans}  # type: ignore[attr-defined]
    roots = [span for _, span in spans if span.parent_span_id not in span_ids]  # type: ignore[attr-defined]
    assert all(root.parent_span_id == bytes.fromhex("00f067aa0ba902b7") for root in roots)  # type: ignore[attr-defined]
