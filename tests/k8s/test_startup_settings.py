"""What a pod needs at start that the manifests rely on:

- a database that comes up after the pod (the usual order on a fresh cluster) is waited
  for inside the startup probe's window, instead of a crash and CrashLoopBackOff; wrong
  credentials still fail at once;
- the OpenTelemetry env the manifests give every container (downward API values composed
  into OTEL_RESOURCE_ATTRIBUTES, the sampler variables) reaches the tracer provider;
- a gateway that declares a proxy in production refuses to start without TRUSTED_PROXIES.

The database is the local PostgreSQL (127.0.0.1:5432), reached through a TCP forwarder that
starts listening only after a delay.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator

import psycopg
import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings
from meshctl.mesh import free_port
from runtime.database import open_database
from runtime.settings import CommonSettings
from services.agent.pg_pool import ensure_schema
from tests.support.k8s import find, k8s_check

POSTGRES = ("127.0.0.1", 5432)
USER_PASSWORD = "postgres:postgres"
DELAY_S = 2.0


def local_postgres_or_skip() -> None:
    try:
        psycopg.connect(f"postgresql://{USER_PASSWORD}@{POSTGRES[0]}:{POSTGRES[1]}/postgres", connect_timeout=3).close()
    except psycopg.Error as exc:
        pytest.skip(f"no local PostgreSQL at {POSTGRES}: {exc}")


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def late_database(delay_s: float) -> AsyncIterator[int]:
    """A port where nothing listens for `delay_s`, then a forwarder to the local Postgres."""
    port = free_port()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*POSTGRES)
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    async def listen_later() -> asyncio.Server:
        await asyncio.sleep(delay_s)
        return await asyncio.start_server(forward, "127.0.0.1", port)

    task = asyncio.create_task(listen_later())
    try:
        yield port
    finally:
        server = await task
        server.close()


async def test_open_database_waits_for_a_database_that_starts_late() -> None:
    local_postgres_or_skip()
    async with late_database(DELAY_S) as port:
        settings = CommonSettings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=f"postgresql://{USER_PASSWORD}@127.0.0.1:{port}/postgres",
            db_connect_timeout_s=30,
        )
        started = time.monotonic()
        database = await open_database(settings, schema="public", migrations=None)
        try:
            await database.ping()
        finally:
            await database.close()
    assert time.monotonic() - started >= DELAY_S * 0.9


async def test_the_agents_first_connection_waits_too() -> None:
    local_postgres_or_skip()
    async with late_database(DELAY_S) as port:
        started = time.monotonic()
        await ensure_schema(f"postgresql://{USER_PASSWORD}@127.0.0.1:{port}/postgres", "public", connect_timeout_s=30)
    assert time.monotonic() - started >= DELAY_S * 0.9


async def test_the_wait_ends_at_the_timeout() -> None:
    port = free_port()  # nothing ever listens here
    settings = CommonSettings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"postgresql://{USER_PASSWORD}@127.0.0.1:{port}/postgres",
        db_connect_timeout_s=1.5,
    )
    started = time.monotonic()
    with pytest.raises(OSError):
        await open_database(settings, schema="public", migrations=None)
    assert 1.4 <= time.monotonic() - started < 10


@pytest.mark.parametrize(
    ("credentials", "database", "error"),
    [("no_such_role_k8s:x", "postgres", "no_such_role_k8s"), (USER_PASSWORD, "no_such_database_k8s", "does not exist")],
)
async def test_wrong_credentials_or_database_fail_at_once(credentials: str, database: str, error: str) -> None:
    local_postgres_or_skip()
    settings = CommonSettings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"postgresql://{credentials}@{POSTGRES[0]}:{POSTGRES[1]}/{database}",
        db_connect_timeout_s=30,
    )
    started = time.monotonic()
    with pytest.raises(Exception, match=error):
        await open_database(settings, schema="public", migrations=None)
    assert time.monotonic() - started < 5


def test_manifest_otel_env_reaches_the_tracer_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.resources import Resource

    from runtime.tracing import TracingSettings, sampler_from

    docs = k8s_check.render_overlay("prod")
    agent = find(docs, "Deployment", "agent")
    container = agent["spec"]["template"]["spec"]["containers"][0]
    labels = agent["spec"]["template"]["metadata"]["labels"]
    env, _ = k8s_check.container_env({**container, "_pod_labels": labels}, docs)
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("OTEL_"):
            monkeypatch.setenv(key, value)
    attributes = Resource.create({"service.name": "agentmesh-agent"}).attributes
    assert attributes["k8s.pod.name"] == k8s_check.FIELD_PLACEHOLDERS["metadata.name"]
    assert attributes["k8s.namespace.name"] == "agentmesh"
    assert attributes["service.version"] == container["image"].rsplit(":", 1)[1]
    description = sampler_from(TracingSettings()).get_description()
    assert description.startswith("ParentBased{root:TraceIdRatioBased{0.1}"), description


def test_sampler_settings_refuse_unknown_values(monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.tracing import TracingSettings

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sometimes")
    with pytest.raises(ValidationError):
        TracingSettings()


def test_gateway_behind_a_proxy_needs_trusted_proxies_in_production() -> None:
    base = {"app_env": "production", "rate_limit_storage_url": "redis://redis:6379/0", "gateway_behind_proxy": True}
    with pytest.raises(ValidationError, match="TRUSTED_PROXIES"):
        GatewaySettings(_env_file=None, **base)  # type: ignore[call-arg]
    GatewaySettings(_env_file=None, **base, trusted_proxies="10.0.0.0/8")  # type: ignore[call-arg]
    # Without a declared proxy the peer address is the client: nothing to trust.
    GatewaySettings(_env_file=None, **{**base, "gateway_behind_proxy": False})  # type: ignore[call-arg]
