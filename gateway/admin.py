"""What operators see and the public does not: upstream health and the metrics port.

Readiness used to ask all five upstreams on every probe, so an evals outage took every gateway
out of its Service and the whole API went dark for one optional backend. Now:
- `/readyz` (public port) answers only ready or not: the gateway serves, and it can verify tokens
  (it has the auth service's signing keys, fetched once and kept through an auth outage).
- Upstream health is checked in the background and published as `gateway_upstream_up{upstream}`
  plus `/upstreamz` (addresses and statuses) on the metrics port, with `/metrics`, bound to
  GATEWAY_METRICS_HOST:GATEWAY_METRICS_PORT (loopback by default), never the public port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from gateway.upstreams import NoUpstream, UpstreamPool
from runtime.logging import get_logger

log = get_logger(__name__)

AUTH_SERVICE = "agentmesh.auth.v1.AuthService"


def short_name(service_full_name: str) -> str:
    """`agentmesh.evals.v1.EvalService` -> `evals` (the name of its `<NAME>_ADDR` setting)."""
    parts = service_full_name.split(".")
    return parts[-3] if len(parts) >= 3 else service_full_name


@dataclass
class UpstreamSnapshot:
    """The last background check, replaced whole so the metrics thread reads a consistent one."""

    statuses: dict[str, str] = field(default_factory=dict)
    checked_at: float = 0.0


class SigningKeys:
    """Whether this gateway can verify access tokens: the auth service's JWKS has been fetched.

    Once keys are in hand they stay usable through an auth outage (the verifier keeps them too),
    so a gateway that was ready stays ready when auth blips.
    """

    def __init__(self, upstreams: UpstreamPool, timeout_s: float) -> None:
        self._upstreams = upstreams
        self._timeout_s = timeout_s
        self.count = 0
        self.fetched_at = 0.0
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        return self.count > 0

    async def fetch(self) -> bool:
        async with self._lock:
            try:
                stub = auth_pb2_grpc.AuthServiceStub(self._upstreams.channel_for(AUTH_SERVICE))
                reply = await stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=self._timeout_s)
            except (grpc.aio.AioRpcError, NoUpstream) as exc:
                log.info("jwks_unavailable", error=type(exc).__name__)
                return self.loaded
            if reply.keys:
                self.count = len(reply.keys)
                self.fetched_at = time.time()
            return self.loaded

    async def ready(self) -> bool:
        return self.loaded or await self.fetch()


class UpstreamMonitor:
    """Checks every upstream's grpc.health.v1 status every `interval_s`, in the background."""

    def __init__(
        self,
        upstreams: UpstreamPool,
        registry: CollectorRegistry,
        keys: SigningKeys,
        *,
        interval_s: float,
        timeout_s: float,
    ) -> None:
        self.upstreams = upstreams
        self.keys = keys
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.snapshot = UpstreamSnapshot()
        # Labelled `upstream` (short name: `evals`), not `service`, which Prometheus' Kubernetes
        # discovery already sets on every target (it would become `exported_service`).
        self._up = Gauge(
            "gateway_upstream_up",
            "1 when the upstream answered SERVING to the gateway's last health check, else 0.",
            ["upstream"],
            registry=registry,
        )
        self._keys = Gauge(
            "gateway_jwks_keys", "Signing keys the gateway holds to verify access tokens.", registry=registry
        )
        self._task: asyncio.Task[None] | None = None

    async def check_once(self) -> UpstreamSnapshot:
        names = sorted(self.upstreams.addresses)
        results = await asyncio.gather(*(self.upstreams.health(name, self.timeout_s) for name in names))
        snapshot = UpstreamSnapshot(dict(zip(names, results, strict=True)), time.time())
        for name, status in snapshot.statuses.items():
            self._up.labels(upstream=short_name(name)).set(1 if status == "SERVING" else 0)
        if AUTH_SERVICE in self.upstreams.addresses:
            await self.keys.fetch()
        self._keys.set(self.keys.count)
        self.snapshot = snapshot
        return snapshot

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-upstream-monitor")

    async def _run(self) -> None:
        while True:
            try:
                await self.check_once()
            except Exception as exc:
                log.warning("upstream_check_failed", error=type(exc).__name__)
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def detail(self) -> dict[str, Any]:
        snapshot = self.snapshot
        addresses = self.upstreams.addresses
        return {
            "checked_at": snapshot.checked_at,
            "upstreams": {
                name: {
                    "upstream": short_name(name),
                    "address": address,
                    "status": snapshot.statuses.get(name, "UNKNOWN"),
                }
                for name, address in sorted(addresses.items())
            },
            "jwks": {"keys": self.keys.count, "fetched_at": self.keys.fetched_at},
        }


class MetricsServer:
    """`/metrics` and `/upstreamz` on their own port, served from a thread (off the event loop)."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, detail: Callable[[], dict[str, Any]]):
        registry_ref, detail_ref = registry, detail

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry_ref))
                elif path == "/upstreamz":
                    self._send(200, "application/json", json.dumps(detail_ref(), indent=1).encode())
                else:
                    self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /upstreamz\n")

            def _send(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return  # scrapes every few seconds would drown the gateway's own log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="gateway-metrics", daemon=True)

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
