"""Calling as a service in tests: a service token from the real auth service, obtained
with the service's development credential (what every service does in development)."""

from __future__ import annotations

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from runtime.service_identity import dev_service_credential


async def service_token(stub: auth_pb2_grpc.AuthServiceStub, name: str = "agent") -> str:
    response = await stub.IssueServiceToken(
        auth_pb2.IssueServiceTokenRequest(service_name=name, credential=dev_service_credential(name))
    )
    return response.access_token


async def service_metadata(
    stub: auth_pb2_grpc.AuthServiceStub, name: str = "agent", *, on_behalf_of: str = ""
) -> tuple[tuple[str, str], ...]:
    entries = [("authorization", f"Bearer {await service_token(stub, name)}")]
    if on_behalf_of:
        entries.append(("x-on-behalf-of", on_behalf_of))
    return tuple(entries)
