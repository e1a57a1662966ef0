"""Upstream gRPC channels (one per address), deadlines and the metadata forwarded to them."""

from __future__ import annotations

import ipaddress
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message
from grpc.aio import Channel
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.descriptors import HttpBinding
from runtime.clients import lb_policy_options

# Forwarded as-is; everything else from HTTP stays at the gateway. The caller's credential is not
# in this list: it is exactly one `Authorization` header, passed to outgoing_metadata on its own.
FORWARDED_HEADERS = ("traceparent", "tracestate")
METADATA_PREFIX = "grpc-metadata-"

_GRPC_TIMEOUT = re.compile(r"^(\d{1,8})([HMSmun])$")
_GRPC_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
# Header names HTTP/2 and gRPC reserve; a client must not smuggle them in via grpc-metadata-*.
_RESERVED_METADATA = {"content-type", "te", "user-agent", "grpc-timeout", "grpc-encoding", "host", "connection"}

_CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
]


class NoUpstream(LookupError):
    pass


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()


class UpstreamPool:
    """One long-lived channel per upstream address, shared by every request to it."""

    def __init__(self, addresses: Mapping[str, str]) -> None:
        self._addresses = dict(addresses)
        self._channels: dict[str, Channel] = {}

    @property
    def addresses(self) -> dict[str, str]:
        return dict(self._addresses)

    def channel_for(self, service_full_name: str) -> Channel:
        address = self._addresses.get(service_full_name)
        if address is None:
            raise NoUpstream(service_full_name)
        channel = self._channels.get(address)
        if channel is None:
            # GRPC_LB_POLICY (round_robin): a `dns:///` headless-Service address spreads over every pod.
            channel = grpc.aio.insecure_channel(address, options=[*_CHANNEL_OPTIONS, *lb_policy_options()])
            self._channels[address] = channel
        return channel

    def unary(self, binding: HttpBinding) -> grpc.aio.UnaryUnaryMultiCallable:
        return self.channel_for(binding.service_name).unary_unary(
            binding.grpc_path,
            request_serializer=_serialize,
            response_deserializer=binding.response_class.FromString,
        )

    def server_stream(self, binding: HttpBinding) -> grpc.aio.UnaryStreamMultiCallable:
        return self.channel_for(binding.service_name).unary_stream(
            binding.grpc_path,
            request_serializer=_serialize,
            response_deserializer=binding.response_class.FromString,
        )

    async def health(self, service_full_name: str, deadline_s: float) -> str:
        """The upstream's grpc.health.v1 status name for the service, or why it could not be read."""
        stub = health_pb2_grpc.HealthStub(self.channel_for(service_full_name))
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service_full_name), timeout=deadline_s)
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details() or ''}".rstrip(": ")
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def parse_timeout(headers: Mapping[str, str]) -> float | None:
    """The client's requested deadline in seconds: `grpc-timeout` (gRPC form) or `x-request-timeout`."""
    grpc_timeout = headers.get("grpc-timeout")
    if grpc_timeout:
        match = _GRPC_TIMEOUT.match(grpc_timeout.strip())
        if match is None:
            return None
        return int(match.group(1)) * _GRPC_TIMEOUT_UNITS[match.group(2)]
    seconds = headers.get("x-request-timeout")
    if seconds:
        try:
            value = float(seconds)
        except ValueError:
            return None
        return value if value > 0 else None
    return None


def choose_timeout(requested: float | None, default: float, cap: float) -> float:
    return min(requested if requested is not None else default, cap)


@dataclass(frozen=True)
class ClientAddress:
    """Who sent the request: the peer, or the first untrusted hop behind trusted proxies."""

    client: str
    forwarded_for: str | None


def client_address(
    peer: str | None,
    forwarded_for: str | None,
    trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> ClientAddress:
    peer = peer or "unknown"
    if not _is_trusted(peer, trusted):
        # An untrusted peer could claim any X-Forwarded-For; only its own address is a fact.
        return ClientAddress(client=peer, forwarded_for=peer)
    hops = [hop.strip() for hop in (forwarded_for or "").split(",") if hop.strip()]
    chain = [*hops, peer]
    client = peer
    for hop in reversed(chain):
        client = hop
        if not _is_trusted(hop, trusted):
            break
    return ClientAddress(client=client, forwarded_for=", ".join(chain))


def _is_trusted(address: str, trusted: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def request_id(headers: Mapping[str, str]) -> str:
    supplied = headers.get("x-request-id", "").strip()
    # Bounded and printable, since it ends up in logs and response headers.
    if supplied and len(supplied) <= 128 and supplied.isprintable():
        return supplied
    return uuid.uuid4().hex


# Keys the gateway alone sets: a client spelling them as grpc-metadata-* would choose its own
# credential (the services would read a different one than the rate limiter), its own address
# or request id, or act on behalf of another user.
_GATEWAY_OWNED_METADATA = {
    "x-request-id",
    "x-forwarded-for",
    "forwarded",
    "x-real-ip",
    "x-on-behalf-of",
    "traceparent",
    "tracestate",
}


def _forwardable(key: str, value: str) -> bool:
    # gRPC rejects non-ASCII text metadata at call time; drop it here rather than fail the request.
    if not key or key in _RESERVED_METADATA or key.startswith(("grpc-", ":")) or key.endswith("-bin"):
        return False
    return value.isascii() and value.isprintable()


def _client_metadata_key(key: str) -> bool:
    """A grpc-metadata-* key a client may set: none that is, or looks like, a credential."""
    return key not in _GATEWAY_OWNED_METADATA and "authorization" not in key and "token" not in key


def outgoing_metadata(
    headers: Sequence[tuple[str, str]],
    request_id_value: str,
    forwarded_for: str | None,
    credential: str | None = None,
) -> list[tuple[str, str]]:
    """The gRPC metadata for one call: the one credential, trace context, request id, client
    address, and any `Grpc-Metadata-*` headers that are not the gateway's to set."""
    metadata: list[tuple[str, str]] = []
    if credential and _forwardable("authorization", credential):
        metadata.append(("authorization", credential))
    for name, value in headers:
        lower = name.lower()
        if lower in FORWARDED_HEADERS:
            if _forwardable(lower, value):
                metadata.append((lower, value))
        elif lower.startswith(METADATA_PREFIX):
            key = lower[len(METADATA_PREFIX) :]
            if _client_metadata_key(key) and _forwardable(key, value):
                metadata.append((key, value))
    metadata.append(("x-request-id", request_id_value))
    if forwarded_for:
        metadata.append(("x-forwarded-for", forwarded_for))
    return metadata
