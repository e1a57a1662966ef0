"""Gateway settings, upstream addresses, client addresses behind proxies, deadlines, metadata."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings
from gateway.upstreams import choose_timeout, client_address, outgoing_metadata, parse_timeout, request_id


def settings(**values: object) -> GatewaySettings:
    return GatewaySettings(_env_file=None, **values)  # type: ignore[arg-type]


def test_lists_come_comma_separated_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("TRUSTED_PROXIES", "10.0.0.0/8,::1")
    loaded = settings()
    assert loaded.allowed_origins == ["https://a.example", "https://b.example"]
    assert loaded.trusted_networks == (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


def test_defaults() -> None:
    loaded = settings()
    assert (loaded.gateway_host, loaded.gateway_port) == ("127.0.0.1", 8080)
    assert loaded.allowed_origins == ["http://localhost:8080", "http://127.0.0.1:8080"]
    assert loaded.trusted_proxies == []
    assert loaded.rate_limit_enabled is True


def test_malformed_trusted_proxy_is_refused() -> None:
    with pytest.raises(ValidationError):
        settings(trusted_proxies=["not-a-network"])


def test_production_refuses_per_process_rate_limit_counters() -> None:
    with pytest.raises(ValidationError, match="RATE_LIMIT_STORAGE_URL"):
        settings(app_env="production")
    assert settings(app_env="production", rate_limit_storage_url="redis://redis:6379/0").app_env == "production"
    assert settings(app_env="production", rate_limit_enabled=False).rate_limit_enabled is False


def test_upstream_address_from_the_service_package(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = settings(memory_addr="mem:1")
    assert loaded.upstream_address("agentmesh.memory.v1.MemoryService") == "mem:1"
    assert loaded.upstream_address("agentmesh.auth.v1.AuthService") == "127.0.0.1:50051"
    # A service added after this gateway was written needs only its <NAME>_ADDR variable.
    assert loaded.upstream_address("agentmesh.billing.v1.BillingService") is None
    monkeypatch.setenv("BILLING_ADDR", "billing:50060")
    assert loaded.upstream_address("agentmesh.billing.v1.BillingService") == "billing:50060"


TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    address = client_address("203.0.113.9", "6.6.6.6", TRUSTED)
    assert address.client == "203.0.113.9"
    assert address.forwarded_for == "203.0.113.9"


def test_forwarded_for_through_trusted_proxies_names_the_first_untrusted_hop() -> None:
    address = client_address("10.0.0.2", "6.6.6.6, 198.51.100.7, 10.0.0.1", TRUSTED)
    assert address.client == "198.51.100.7"
    assert address.forwarded_for == "6.6.6.6, 198.51.100.7, 10.0.0.1, 10.0.0.2"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"grpc-timeout": "5S"}, 5.0),
        ({"grpc-timeout": "250m"}, 0.25),
        ({"grpc-timeout": "2M"}, 120.0),
        ({"grpc-timeout": "1H"}, 3600.0),
        ({"grpc-timeout": "bogus"}, None),
        ({"x-request-timeout": "1.5"}, 1.5),
        ({"x-request-timeout": "-3"}, None),
        ({"x-request-timeout": "soon"}, None),
        ({}, None),
    ],
)
def test_client_deadline_headers(headers: dict[str, str], expected: float | None) -> None:
    assert parse_timeout(headers) == expected


def test_deadline_uses_the_route_default_and_is_capped() -> None:
    assert choose_timeout(None, 30, 600) == 30
    assert choose_timeout(5, 30, 600) == 5
    assert choose_timeout(3600, 30, 600) == 600


def test_request_id_is_kept_when_sane_and_generated_otherwise() -> None:
    assert request_id({"x-request-id": "abc-123"}) == "abc-123"
    assert len(request_id({})) == 32
    assert request_id({"x-request-id": "x" * 500}) != "x" * 500
    assert request_id({"x-request-id": "bad\nid"}) != "bad\nid"


def test_only_the_documented_headers_become_metadata() -> None:
    metadata = outgoing_metadata(
        [
            ("Authorization", "Bearer ignored-here"),
            ("traceparent", "00-abc-def-01"),
            ("Cookie", "session=1"),
            ("Grpc-Metadata-Tenant", "acme"),
            ("Grpc-Metadata-Grpc-Status", "0"),
            ("Grpc-Metadata-Blob-Bin", "AAAA"),
            ("Grpc-Metadata-Name", "caf\u00e9"),
            ("x-request-id", "client-chosen"),
        ],
        "rid-1",
        "1.2.3.4",
        "Bearer t",
    )
    assert metadata == [
        ("authorization", "Bearer t"),
        ("traceparent", "00-abc-def-01"),
        ("tenant", "acme"),
        ("x-request-id", "rid-1"),
        ("x-forwarded-for", "1.2.3.4"),
    ]


@pytest.mark.parametrize(
    "header",
    [
        "Grpc-Metadata-Authorization",
        "grpc-metadata-authorization",
        "GRPC-METADATA-AUTHORIZATION",
        "Grpc-Metadata-X-Authorization",
        "Grpc-Metadata-Proxy-Authorization",
        "Grpc-Metadata-X-On-Behalf-Of",
        "Grpc-Metadata-X-Forwarded-For",
        "Grpc-Metadata-X-Request-Id",
        "Grpc-Metadata-Traceparent",
    ],
)
def test_the_gateways_own_keys_cannot_be_set_through_grpc_metadata(header: str) -> None:
    # Before: Grpc-Metadata-Authorization became a second `authorization` entry, which the
    # services read (the last one wins) while the rate limiter keyed on the first.
    metadata = outgoing_metadata([(header, "Bearer smuggled")], "rid-1", "1.2.3.4", None)
    assert all(value != "Bearer smuggled" for _, value in metadata), metadata
    assert [key for key, _ in metadata] == ["x-request-id", "x-forwarded-for"]
