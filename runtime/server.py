"""The one way a service starts and stops.

A service is a `ServiceApp`: it opens its resources in `start()` and returns the gRPC
services it mounts; `serve()` does the rest: logs, metrics port, tracing, the
interceptor, health and reflection, SIGTERM drain. `create_server()` is the same
server without signals, for tests and benchmarks that bind port 0.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from runtime import rpc_policy
from runtime.clients import open_channel
from runtime.interceptors import RuntimeInterceptor
from runtime.logging import configure_logging, get_logger
from runtime.metrics import database_up, start_metrics_server
from runtime.revocations import RevocationFeed, RevocationSet
from runtime.service_identity import ServiceIdentity
from runtime.settings import CommonSettings, ConfigurationError, TokenClientSettings
from runtime.tokens import AccessTokenVerifier, JwksKeySource
from runtime.tracing import configure_tracing, shutdown_tracing

log = get_logger(__name__)


@dataclass(frozen=True)
class Mount:
    """One gRPC service a process serves.

    Which of its methods need no token and which only services may call is read from the
    contract's method options (runtime.rpc_policy), not listed here.
    """

    descriptor: ServiceDescriptor
    add_to_server: Callable[[Any, grpc.aio.Server], None]
    servicer: Any

    def __post_init__(self) -> None:
        # A contract whose policy contradicts itself is refused before anything serves it.
        rpc_policy.check_service(self.descriptor)

    @property
    def full_public_methods(self) -> frozenset[str]:
        return rpc_policy.public_methods(self.descriptor)

    @property
    def full_service_methods(self) -> frozenset[str]:
        return rpc_policy.service_only_methods(self.descriptor)


class ServiceApp(abc.ABC):
    """A service's domain wiring; everything generic lives in `serve()`."""

    name: str

    def __init__(self, settings: CommonSettings) -> None:
        self.settings = settings
        self._jwks_channel: grpc.aio.Channel | None = None
        self._revocation_feed: RevocationFeed | None = None

    @abc.abstractmethod
    async def start(self) -> list[Mount]:
        """Opens pools and clients; returns the services to mount."""

    async def drain(self, grace_s: float) -> None:  # noqa: B027 (a hook: most services have nothing to drain)
        """Called at SIGTERM while the server drains (health NOT_SERVING, no new RPCs): work
        that outlives RPCs (background runs) ends here, within `grace_s`."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Closes what start() opened; called after the server drained."""

    def database_ping(self) -> Callable[[], Awaitable[None]] | None:
        """How the health probe asks this service's database whether it answers (a coroutine
        that raises when it does not), or None when the service has no database. The default
        pings `self.database` (runtime.database.Database); other apps override it."""
        database = getattr(self, "database", None)
        ping = getattr(database, "ping", None)
        return ping if callable(ping) else None

    def token_verifier(self) -> AccessTokenVerifier:
        """Verifies access tokens with the auth service's JWKS and refuses the revoked ones
        it learns from the auth service's revocation feed. The auth service, whose settings
        carry no AUTH_ADDR, overrides it with its own key ring and revocations."""
        settings = self.settings
        if not isinstance(settings, TokenClientSettings):
            raise TypeError(
                f"{self.name}: {type(settings).__name__} is not a TokenClientSettings, so the app "
                "must verify tokens itself (override token_verifier)"
            )
        self._jwks_channel = open_channel(settings.auth_addr)
        keys = JwksKeySource(
            self._jwks_channel,
            ttl_s=settings.jwks_cache_ttl_s,
            refetch_min_interval_s=settings.jwks_refetch_min_interval_s,
        )
        revocations = RevocationSet()
        identity = ServiceIdentity.from_settings(settings, self.name, self._jwks_channel)
        self._revocation_feed = RevocationFeed(self._jwks_channel, identity, revocations)
        self._revocation_feed.start()
        return AccessTokenVerifier(
            keys,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            algorithm=settings.jwt_algorithm,
            revocations=revocations,
        )

    async def before_drain(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Called when shutdown starts, before in-flight RPCs drain: end endless streams here."""

    async def close_verifier(self) -> None:
        if self._revocation_feed is not None:
            await self._revocation_feed.close()
        if self._jwks_channel is not None:
            await self._jwks_channel.close()


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: list[str]

    async def set_serving(self) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def set_services_serving(self, serving: bool) -> None:
        """The status of each mounted service (what readiness probes and the gateway ask);
        the overall "" status (liveness) is left alone."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in self.service_names:
            await self.health.set(name, status)

    async def drain(self, grace_s: float) -> None:
        """NOT_SERVING for every service, refuse new RPCs, let in-flight ones finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace_s)


class DatabaseHealth:
    """Keeps a service's health honest about its database: every `interval_s` it pings, and
    the mounted services are NOT_SERVING while a ping fails or overstays `timeout_s`, SERVING
    again after the first ping that succeeds; no restart needed. Liveness ("") is untouched:
    restarting a process whose database is down cures nothing."""

    def __init__(
        self,
        ping: Callable[[], Awaitable[None]],
        running: RunningServer,
        *,
        interval_s: float,
        timeout_s: float,
    ) -> None:
        self._ping = ping
        self._running = running
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self.reachable = True
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._probe_forever(), name="database-health")

    async def check(self) -> bool:
        """One ping; updates the health status when reachability changed."""
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._ping()
            reachable, error = True, ""
        except Exception as exc:
            reachable, error = False, type(exc).__name__
        if reachable != self.reachable:
            self.reachable = reachable
            database_up.set(1 if reachable else 0)
            await self._running.set_services_serving(reachable)
            if reachable:
                log.info("database_reachable_again", health="SERVING")
            else:
                log.warning("database_unreachable", health="NOT_SERVING", error=error)
        return reachable

    async def _probe_forever(self) -> None:
        database_up.set(1)
        while True:
            await asyncio.sleep(self._interval_s)
            await self.check()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def server_options(settings: CommonSettings) -> list[tuple[str, int]]:
    """Limits every server sets (settings.py says why each has its value)."""

    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    return [
        ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_concurrent_streams", settings.grpc_max_concurrent_streams),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", ms(settings.grpc_keepalive_min_ping_interval_s)),
        ("grpc.http2.max_ping_strikes", settings.grpc_max_ping_strikes),
        ("grpc.keepalive_time_ms", ms(settings.grpc_keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", ms(settings.grpc_keepalive_timeout_s)),
        ("grpc.max_connection_age_ms", ms(settings.grpc_max_connection_age_s)),
        ("grpc.max_connection_age_grace_ms", ms(settings.grpc_max_connection_age_grace_s)),
        ("grpc.so_reuseport", 0),
    ]


async def create_server(
    settings: CommonSettings,
    mounts: Iterable[Mount],
    verifier: AccessTokenVerifier,
    *,
    extra_interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
    port: int | None = None,
) -> RunningServer:
    mounts = list(mounts)
    public = frozenset(method for mount in mounts for method in mount.full_public_methods)
    service_only = frozenset(method for mount in mounts for method in mount.full_service_methods)
    server = grpc.aio.server(
        interceptors=[*extra_interceptors, RuntimeInterceptor(verifier, public, service_only)],
        options=server_options(settings),
    )
    for mount in mounts:
        mount.add_to_server(mount.servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [mount.descriptor.full_name for mount in mounts]
    if settings.reflection_enabled:
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
        )
    bind_port = settings.grpc_port if port is None else port
    bound = server.add_insecure_port(f"{settings.grpc_host}:{bind_port}")
    if bound == 0:
        # The port is taken or the host is not ours: the operator's to fix, not a crash.
        raise ConfigurationError(f"cannot listen on {settings.grpc_host}:{bind_port}")
    await server.start()
    running = RunningServer(server, bound, health_servicer, names)
    await running.set_serving()
    return running


async def serve(app: ServiceApp) -> None:
    settings = app.settings
    configure_logging(service=app.name, level=settings.log_level, fmt=settings.effective_log_format)
    tracing_interceptors = configure_tracing(settings, app.name)
    metrics_port = start_metrics_server(settings.metrics_host, settings.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    mounts = await app.start()
    verifier = app.token_verifier()
    running = await create_server(settings, mounts, verifier, extra_interceptors=tracing_interceptors)
    database_health: DatabaseHealth | None = None
    ping = app.database_ping()
    if ping is not None:
        database_health = DatabaseHealth(
            ping,
            running,
            interval_s=settings.db_health_interval_s,
            timeout_s=settings.db_health_timeout_s,
        )
        database_health.start()
    log.info("serving", grpc_port=running.port, metrics_port=metrics_port, env=settings.app_env)
    # One machine-readable line on stdout: `make run` and the tests wait for it.
    print(
        f"AGENTMESH_READY service={app.name} grpc={settings.grpc_host}:{running.port} "
        f"metrics={settings.metrics_host}:{metrics_port}",
        flush=True,
    )
    await stop.wait()
    log.info("draining", grace_s=settings.shutdown_grace_s)
    if database_health is not None:
        # Before the drain: it turns every status NOT_SERVING, which a late ping must not undo.
        await database_health.close()
    await app.before_drain()
    await asyncio.gather(running.drain(settings.shutdown_grace_s), app.drain(settings.shutdown_grace_s))
    await app.stop()
    await app.close_verifier()
    shutdown_tracing()
    log.info("stopped")


def run(app: ServiceApp) -> None:
    # SIGINT and SIGTERM are handled inside serve(), so a clean drain exits 0.
    asyncio.run(serve(app))
    sys.exit(0)
