"""Limits every gRPC server sets (runtime/server.py): stream count, message sizes
that agree with the gateway's body limit, keepalive enforcement, connection age, and
reflection off in production.

Before: receive and send limits were 4 MiB (four times what the gateway lets in), no
stream limit, no connection age (a client channel stayed on one replica for ever), no ping
strikes, and reflection on in production.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.settings import GatewaySettings
from runtime.server import RunningServer, create_server, server_options
from runtime.settings import CommonSettings

PRODUCTION = {"app_env": "production", "database_url": "postgresql://unused@127.0.0.1/unused"}


def settings(**values: object) -> CommonSettings:
    # Built directly (no .env files): exactly the values the test names.
    return CommonSettings(grpc_host="127.0.0.1", grpc_port=0, **values)  # type: ignore[arg-type]


class NoTokens:
    """Health and reflection never ask for a token; nothing else is mounted."""

    async def verify(self, token: str) -> None:
        raise AssertionError("no authenticated call is made in these tests")


@pytest.fixture
async def start_server() -> AsyncIterator:
    started: list[RunningServer] = []

    async def start(config: CommonSettings) -> str:
        running = await create_server(config, [], NoTokens(), port=0)  # type: ignore[arg-type]
        started.append(running)
        return f"127.0.0.1:{running.port}"

    yield start
    for running in started:
        await running.server.stop(None)


async def reflected_services(addr: str) -> set[str]:
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        listed: set[str] = set()
        async for response in responses:
            listed |= {s.name for s in response.list_services_response.service}
        return listed


def test_every_limit_is_set() -> None:
    options = dict(server_options(settings()))
    assert options["grpc.max_concurrent_streams"] == 1000
    assert options["grpc.max_receive_message_length"] == 1_048_576 + 64 * 1024
    assert options["grpc.max_send_message_length"] == 4 * 1024 * 1024
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.http2.max_ping_strikes"] == 2
    assert options["grpc.keepalive_time_ms"] == 60_000
    assert options["grpc.keepalive_timeout_ms"] == 20_000
    assert options["grpc.max_connection_age_ms"] == 300_000
    assert options["grpc.max_connection_age_grace_ms"] == 900_000


def test_limits_agree_with_the_gateway_and_its_clients() -> None:
    common, gateway = settings(), GatewaySettings()
    # Whatever body the gateway lets in fits a service's receive limit once transcoded.
    assert common.gateway_max_body_bytes == gateway.gateway_max_body_bytes
    assert common.max_receive_message_bytes > gateway.gateway_max_body_bytes
    # A stream the gateway keeps open is never cut by the connection-age grace.
    assert common.grpc_max_connection_age_grace_s > gateway.gateway_stream_timeout
    # Our clients ping every 30 s: slower than the minimum the server enforces.
    from runtime.clients import KEEPALIVE_OPTIONS

    assert dict(KEEPALIVE_OPTIONS)["grpc.keepalive_time_ms"] >= common.grpc_keepalive_min_ping_interval_s * 1000
    # A larger body limit moves the receive limit with it.
    assert settings(gateway_max_body_bytes=2_000_000).max_receive_message_bytes == 2_000_000 + 64 * 1024


async def test_reflection_is_off_in_production_unless_asked_for(start_server) -> None:
    development = await start_server(settings())
    production = await start_server(settings(**PRODUCTION))
    production_asked = await start_server(settings(**PRODUCTION, grpc_reflection=True))

    assert "grpc.health.v1.Health" in await reflected_services(development)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await reflected_services(production)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "grpc.health.v1.Health" in await reflected_services(production_asked)


async def test_a_message_above_the_receive_limit_is_refused(start_server) -> None:
    config = settings()
    addr = await start_server(config)
    async with grpc.aio.insecure_channel(addr, options=[("grpc.max_send_message_length", 8 * 1024 * 1024)]) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        # As large as the gateway ever forwards: reaches the handler (an unknown service).
        with pytest.raises(grpc.aio.AioRpcError) as handled:
            await health.Check(health_pb2.HealthCheckRequest(service="x" * config.gateway_max_body_bytes), timeout=10)
        # One byte past the limit: refused by the transport, before any handler or interceptor.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health.Check(
                health_pb2.HealthCheckRequest(service="x" * config.max_receive_message_bytes), timeout=10
            )
    assert handled.value.code() == grpc.StatusCode.NOT_FOUND
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
