"""Registering test users through the real auth service."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc


@dataclass(frozen=True)
class MeshUser:
    PASSWORD = "Corr3ct-Horse!"

    user_id: str
    email: str
    access_token: str
    refresh_token: str

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.access_token}"),)


async def register_user(stub: auth_pb2_grpc.AuthServiceStub, *, email: str | None = None) -> MeshUser:
    email = email or f"user-{uuid.uuid4().hex[:12]}@example.com"
    response = await stub.Register(auth_pb2.RegisterRequest(email=email, password=MeshUser.PASSWORD))
    return MeshUser(response.user.id, email, response.tokens.access_token, response.tokens.refresh_token)


def unique_email(prefix: str = "user") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}@example.com"
