"""Rate limits per route class: counting, headers, keys, memory and Redis storage."""

from __future__ import annotations

import uuid

import httpx
import pytest

from gateway.descriptors import load_descriptor_set
from gateway.identity import bearer_token, caller_key
from gateway.ratelimit import RateLimiter, async_storage_uri
from gateway.settings import DEFAULT_DESCRIPTOR_SET, GatewaySettings
from tests.support.gateway import serve_in_process, standin_settings
from tests.support.standin import Standin

REDIS_URL = "redis://127.0.0.1:6379/15"
# The route classes the contracts declare (the gateway reads them from its descriptor set).
RATE_LIMIT_CLASSES = load_descriptor_set(DEFAULT_DESCRIPTOR_SET).rate_limit_classes()


def limiter(storage_url: str = "memory://", **limits: str) -> RateLimiter:
    return RateLimiter(
        {"default": "1000 per day", **limits},
        RATE_LIMIT_CLASSES,
        storage_url=storage_url,
        key_prefix=f"test-{uuid.uuid4().hex}",
    )


def test_route_classes_follow_the_seed() -> None:
    rate = limiter()
    assert rate.class_for("agentmesh.auth.v1.AuthService.Login") == "login"
    assert rate.class_for("agentmesh.auth.v1.AuthService.Refresh") == "login"
    assert rate.class_for("agentmesh.auth.v1.AuthService.Register") == "register"
    assert rate.class_for("agentmesh.agent.v1.AgentService.Chat") == "chat"
    assert rate.class_for("agentmesh.agent.v1.AgentService.StreamChat") == "chat_stream"
    assert rate.class_for("agentmesh.agent.v1.AgentService.GetHistory") == "messages"
    assert rate.class_for("agentmesh.agent.v1.AgentService.ClearHistory") == "messages"
    assert rate.class_for("agentmesh.sessions.v1.SessionService.ListSessions") == "default"


def test_default_settings_count_reads_per_minute() -> None:
    # Before: every route but chat and login shared "1000 per day,200 per hour", so a page polling
    # GET /v1/sessions every 15 s plus a script ran out within the hour.
    settings = GatewaySettings(_env_file=None)
    assert settings.rate_limits() == {
        "default": "60 per minute,1000 per hour",
        "read": "300 per minute",
        "chat": "100 per minute",
        "chat_stream": "100 per minute",
        "messages": "200 per minute",
        "login": "100 per minute",
        "register": "20 per minute",
    }
    assert settings.rate_limit_storage_url == "memory://"


def test_get_routes_fall_into_the_read_class_unless_named() -> None:
    rate = limiter(read="300 per minute")
    assert rate.class_for("agentmesh.sessions.v1.SessionService.ListSessions", "GET") == "read"
    assert rate.class_for("agentmesh.memory.v1.MemoryService.ListMemories", "HEAD") == "read"
    assert rate.class_for("agentmesh.sessions.v1.SessionService.CreateSession", "POST") == "default"
    # A class named for the RPC wins over the method.
    assert rate.class_for("agentmesh.agent.v1.AgentService.GetHistory", "GET") == "messages"


def test_storage_urls_use_the_async_backends() -> None:
    assert async_storage_uri("redis://h:6379/1") == "async+redis://h:6379/1"
    assert async_storage_uri("memory://") == "async+memory://"
    assert async_storage_uri("async+redis://h") == "async+redis://h"


@pytest.mark.parametrize("storage_url", ["memory://", REDIS_URL])
async def test_limit_counts_per_class_and_caller(storage_url: str) -> None:
    rate = limiter(storage_url, login="3 per minute")
    try:
        decisions = [await rate.hit("login", "addr:1.2.3.4") for _ in range(4)]
        assert [d.allowed for d in decisions if d] == [True, True, True, False]
        assert [d.remaining for d in decisions if d] == [2, 1, 0, 0]
        denied = decisions[-1]
        assert denied is not None and denied.limit == 3
        assert 1 <= denied.reset_after <= 60
        assert denied.headers()["Retry-After"] == str(denied.reset_after)
        # Another caller, and another class, have their own counters.
        other = await rate.hit("login", "addr:5.6.7.8")
        assert other is not None and other.allowed
        default = await rate.hit("default", "addr:1.2.3.4")
        assert default is not None and default.allowed
    finally:
        await rate.reset()
        await rate.close()


async def test_the_tightest_of_several_limits_is_reported() -> None:
    rate = limiter(default="100 per day,2 per minute")
    first = await rate.hit("default", "k")
    assert first is not None and (first.limit, first.remaining) == (2, 1)
    await rate.hit("default", "k")
    third = await rate.hit("default", "k")
    assert third is not None and not third.allowed and third.limit == 2


async def test_unreachable_storage_lets_requests_through() -> None:
    rate = limiter("redis://127.0.0.1:1/0", login="1 per minute")
    assert await rate.hit("login", "k") is None
    assert await rate.hit("login", "k") is None


class FakeVerifier:
    async def verify(self, token: str) -> object:
        if token != "valid":
            raise ValueError("bad token")

        class Principal:
            user_id = "u-42"

        return Principal()


async def test_caller_is_the_user_with_a_valid_token_else_the_address() -> None:
    verifier = FakeVerifier()
    assert await caller_key(verifier, "Bearer valid", "1.2.3.4") == "user:u-42"
    assert await caller_key(verifier, "Bearer forged", "1.2.3.4") == "addr:1.2.3.4"
    assert await caller_key(verifier, None, "1.2.3.4") == "addr:1.2.3.4"
    assert await caller_key(None, "Bearer valid", "1.2.3.4") == "addr:1.2.3.4"
    assert bearer_token("Basic abc") is None
    assert bearer_token("bearer  tok ") == "tok"


@pytest.mark.parametrize("storage_url", ["memory://", REDIS_URL])
async def test_gateway_answers_429_with_retry_after_and_ratelimit_headers(storage_url: str, standin: Standin) -> None:
    settings = standin_settings(
        standin.address,
        rate_limit_enabled=True,
        rate_limit_read="3 per minute",
        rate_limit_storage_url=storage_url,
        rate_limit_key_prefix=f"test-{uuid.uuid4().hex}",
    )
    async with serve_in_process(settings) as url, httpx.AsyncClient(base_url=url) as http:
        responses = [await http.get("/v1/sessions/abc") for _ in range(4)]
        assert [r.status_code for r in responses] == [200, 200, 200, 429]
        assert [r.headers["ratelimit-remaining"] for r in responses] == ["2", "1", "0", "0"]
        limited = responses[-1]
        assert limited.headers["ratelimit-limit"] == "3"
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.headers["ratelimit-reset"] == limited.headers["retry-after"]
        body = limited.json()
        assert body["code"] == 8
        assert body["details"][0]["reason"] == "RATE_LIMITED"
        # Other route classes are counted separately.
        history = await http.get("/v1/sessions/abc/messages")
        assert history.status_code == 200


async def test_limits_can_be_turned_off(standin: Standin) -> None:
    settings = standin_settings(
        standin.address, rate_limit_enabled=False, rate_limit_default="1 per minute", rate_limit_read="1 per minute"
    )
    async with serve_in_process(settings) as url, httpx.AsyncClient(base_url=url) as http:
        statuses = [(await http.get("/v1/sessions/abc")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]
