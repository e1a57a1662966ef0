"""How the CLI commands get an access token from the auth service."""

from __future__ import annotations

import grpc

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from services.evals.settings import EvalsSettings


class CommandError(Exception):
    """A failure the CLI reports in one line and exits 1 on."""


async def login(settings: EvalsSettings, email: str, password: str) -> str:
    async with grpc.aio.insecure_channel(settings.auth_addr) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        try:
            response = await stub.Login(
                auth_pb2.LoginRequest(email=email, password=password), timeout=settings.evals_call_timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise CommandError(f"login as {email} failed: {exc.code().name}: {exc.details()}") from None
    return response.access_token


async def admin_token(settings: EvalsSettings, token: str | None) -> str:
    """`--token`, or a login with EVALS_ADMIN_EMAIL / EVALS_ADMIN_PASSWORD."""
    if token:
        return token
    if not settings.evals_admin_email or settings.evals_admin_password is None:
        raise CommandError("pass --token or set EVALS_ADMIN_EMAIL and EVALS_ADMIN_PASSWORD (an admin account)")
    return await login(settings, settings.evals_admin_email, settings.evals_admin_password.get_secret_value())


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)
