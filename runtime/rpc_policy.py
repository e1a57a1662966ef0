"""Per-RPC policy read from the contracts' method options (agentmesh/options/v1/options.proto).

Who may call an RPC without a token, which RPCs only services may call and which rate-limit
class an RPC counts in are declared once, on the RPC in its .proto file, so the servers, the
gateway, the OpenAPI document and any client that reads the descriptors agree by construction
instead of keeping hand-written lists in step.

The functions take a MethodDescriptor from any pool: the generated modules' default pool (the
services) or a private pool built from the descriptor set (the gateway). Importing options_pb2
here registers the extensions, which both need to read them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.descriptor_pb2 import MethodOptions

from agentmesh.options.v1 import options_pb2

if TYPE_CHECKING:
    # Exists in types-protobuf's stubs only.
    from google.protobuf.internal.extension_dict import _ExtensionFieldDescriptor

# The class of an RPC that names none; its limits are the RATE_LIMIT_DEFAULT setting.
DEFAULT_RATE_LIMIT_CLASS = "default"

# The casts make up for the generated stubs, not the values: protoc's --pyi_out declares each
# extension a bare FieldDescriptor, while types-protobuf's Extensions[...] takes the typed
# _ExtensionFieldDescriptor[extended message, value type] (what mypy-protobuf would write).
_PUBLIC = cast("_ExtensionFieldDescriptor[MethodOptions, bool]", options_pb2.public)
_SERVICE_ONLY = cast("_ExtensionFieldDescriptor[MethodOptions, bool]", options_pb2.service_only)
_RATE_LIMIT_CLASS = cast("_ExtensionFieldDescriptor[MethodOptions, str]", options_pb2.rate_limit_class)


class PolicyError(ValueError):
    """A contract declares a policy that cannot hold (public and service-only at once)."""


def _options(method: MethodDescriptor) -> MethodOptions:
    return method.GetOptions()


def grpc_path(method: MethodDescriptor) -> str:
    """`/agentmesh.auth.v1.AuthService/Login`: how gRPC names the method on the wire."""
    return f"/{method.containing_service.full_name}/{method.name}"


def is_public(method: MethodDescriptor) -> bool:
    """Callable without an access token: `(agentmesh.options.v1.public) = true`."""
    return _options(method).Extensions[_PUBLIC]


def is_service_only(method: MethodDescriptor) -> bool:
    """Callable with a service token only: `(agentmesh.options.v1.service_only) = true`."""
    return _options(method).Extensions[_SERVICE_ONLY]


def declared_rate_limit_class(method: MethodDescriptor) -> str | None:
    """The class the contract names, or None when it names none (the gateway then picks
    `read` for GET and `default` otherwise)."""
    named = _options(method).Extensions[_RATE_LIMIT_CLASS]
    return named or None


def rate_limit_class(method: MethodDescriptor) -> str:
    """The class the contract names, else `default`."""
    return declared_rate_limit_class(method) or DEFAULT_RATE_LIMIT_CLASS


def check_service(service: ServiceDescriptor) -> None:
    """Refuses a contract whose policy contradicts itself, before anything serves it."""
    for method in service.methods:
        if is_public(method) and is_service_only(method):
            raise PolicyError(f"{grpc_path(method)} is declared both public and service_only")


def public_methods(service: ServiceDescriptor) -> frozenset[str]:
    """gRPC paths of the service's RPCs that need no access token."""
    return frozenset(grpc_path(method) for method in service.methods if is_public(method))


def service_only_methods(service: ServiceDescriptor) -> frozenset[str]:
    """gRPC paths of the service's RPCs that only services may call."""
    return frozenset(grpc_path(method) for method in service.methods if is_service_only(method))
