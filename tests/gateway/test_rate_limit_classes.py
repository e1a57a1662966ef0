"""The gateway's rate-limit classes come from the contracts' method options."""

from __future__ import annotations

from gateway.descriptors import load_descriptor_set
from gateway.ratelimit import RateLimiter
from gateway.settings import DEFAULT_DESCRIPTOR_SET, GatewaySettings

# The seed's classes, which the gateway used to keep as a hand-written table.
SEED_CLASSES = {
    "agentmesh.auth.v1.AuthService.Login": "login",
    "agentmesh.auth.v1.AuthService.Refresh": "login",
    "agentmesh.auth.v1.AuthService.Register": "register",
    "agentmesh.agent.v1.AgentService.Chat": "chat",
    "agentmesh.agent.v1.AgentService.StreamChat": "chat_stream",
    "agentmesh.agent.v1.AgentService.GetHistory": "messages",
    "agentmesh.agent.v1.AgentService.ClearHistory": "messages",
}


def test_classes_declared_in_the_contracts_are_the_seeds() -> None:
    assert load_descriptor_set(DEFAULT_DESCRIPTOR_SET).rate_limit_classes() == SEED_CLASSES


def test_every_declared_class_has_limits_in_the_settings() -> None:
    # A class a contract names but no RATE_LIMIT_<CLASS> setting covers would silently count as `default`.
    declared = set(load_descriptor_set(DEFAULT_DESCRIPTOR_SET).rate_limit_classes().values())
    assert declared <= set(GatewaySettings(_env_file=None).rate_limits())  # type: ignore[call-arg]


def test_limiter_built_from_the_contracts_keeps_reads_separate() -> None:
    api = load_descriptor_set(DEFAULT_DESCRIPTOR_SET)
    limiter = RateLimiter(
        {"default": "1000 per day", "read": "300 per minute"},
        api.rate_limit_classes(),
        storage_url="memory://",
        key_prefix="test-rate-limit-classes",
    )
    assert limiter.class_for("agentmesh.agent.v1.AgentService.GetHistory", "GET") == "messages"
    assert limiter.class_for("agentmesh.sessions.v1.SessionService.ListSessions", "GET") == "read"
    assert limiter.class_for("agentmesh.sessions.v1.SessionService.CreateSession", "POST") == "default"
