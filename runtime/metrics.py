"""Prometheus metrics with the names go-grpc-prometheus made conventional, so the
standard gRPC dashboards work, served on their own HTTP port."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

grpc_server_started_total = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_type", "grpc_service", "grpc_method"],
)
grpc_server_handled_total = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, whatever their status.",
    ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
)
grpc_server_handling_seconds = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its status, by method.",
    ["grpc_type", "grpc_service", "grpc_method"],
    buckets=LATENCY_BUCKETS,
)
grpc_server_msg_sent_total = Counter(
    "grpc_server_msg_sent_total",
    "Messages sent by server-streaming RPCs.",
    ["grpc_type", "grpc_service", "grpc_method"],
)

# 1 while the service's database answers its health probe (runtime.server.DatabaseHealth).
database_up = Gauge("database_up", "1 while this process's database answers the health probe, else 0.")


def start_metrics_server(host: str, port: int) -> int:
    """Serves /metrics from a daemon thread (off the event loop); returns the bound port."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)
