"""Outgoing gRPC: channels with keepalive and a retry policy for idempotent methods,
and metadata that carries the caller's token and request id to the next hop."""

from __future__ import annotations

import json
from collections.abc import Iterable

import grpc
import structlog

from services.common.principal import optional_principal

KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


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


def open_channel(target: str, *, idempotent: Iterable[tuple[str, str]] = ()) -> grpc.aio.Channel:
    options = [*KEEPALIVE_OPTIONS, ("grpc.service_config", retry_service_config(idempotent))]
    options.append(("grpc.enable_retries", 1))
    return grpc.aio.insecure_channel(target, options=options)


def forward_metadata(token: str | None = None) -> tuple[tuple[str, str], ...]:
    """Metadata for a call made on behalf of the current caller."""
    if token is None:
        principal = optional_principal()
        token = principal.token if principal is not None else None
    entries: list[tuple[str, str]] = []
    if token:
        entries.append(("authorization", f"Bearer {token}"))
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if request_id:
        entries.append(("x-request-id", str(request_id)))
    return tuple(entries)
