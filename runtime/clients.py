"""Outgoing gRPC: channels with keepalive and a retry policy for idempotent methods,
and metadata that carries the caller's token and request id to the next hop."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Literal

import grpc
import structlog
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.principal import optional_principal

KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


LbPolicy = Literal["round_robin", "pick_first"]


class ChannelSettings(BaseSettings):
    """How outgoing channels spread calls; read by every process that opens channels
    (the services through open_channel, the gateway's upstream pool)."""

    model_config = SettingsConfigDict(extra="ignore")

    # round_robin connects to every address the target resolves to and spreads calls
    # over them: with `dns:///<headless Service>:<port>` that is every ready pod, so
    # replicas the HPA adds get calls. pick_first pins a channel to one address.
    grpc_lb_policy: LbPolicy = "round_robin"


def lb_policy_options(policy: LbPolicy | None = None) -> list[tuple[str, str]]:
    """Channel options selecting the load-balancing policy (GRPC_LB_POLICY by default)."""
    return [("grpc.lb_policy_name", policy or ChannelSettings().grpc_lb_policy)]


def retry_service_config(idempotent: Iterable[tuple[str, str]]) -> str:
    """gRPC service config that retries UNAVAILABLE on the given (service, method)s.

    Only idempotent reads are listed: a retried write could apply twice."""
    names = [{"service": service, "method": method} for service, method in idempotent]
    config = {
        "methodConfig": [
            {
                "name": names,
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
        if names
        else []
    }
    return json.dumps(config)


def open_channel(
    target: str, *, idempotent: Iterable[tuple[str, str]] = (), lb_policy: LbPolicy | None = None
) -> grpc.aio.Channel:
    options = [
        *KEEPALIVE_OPTIONS,
        *lb_policy_options(lb_policy),
        ("grpc.service_config", retry_service_config(idempotent)),
    ]
    options.append(("grpc.enable_retries", 1))
    return grpc.aio.insecure_channel(target, options=options)


def forward_metadata(token: str | None = None) -> tuple[tuple[str, str], ...]:
    """Metadata for a call made on behalf of the current caller."""
    principal = optional_principal()
    if token is None:
        token = principal.token if principal is not None else None
    entries: list[tuple[str, str]] = []
    if token:
        entries.append(("authorization", f"Bearer {token}"))
    # A service acting for a user passes that on, or the next hop would see the bare service.
    if principal is not None and principal.on_behalf_of and token == principal.token:
        entries.append(("x-on-behalf-of", principal.on_behalf_of))
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id:
        entries.append(("x-request-id", str(request_id)))
    return tuple(entries)
