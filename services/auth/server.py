"""agentmesh.auth.v1.AuthService: parse, call the domain, shape the answer."""

from __future__ import annotations

from datetime import datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from services.auth.accounts import Accounts
from services.auth.keys import KeyRing
from services.auth.store import UserRow
from services.auth.tokens import IssuedTokens
from services.common.errors import InvalidArgument
from services.common.principal import current_principal

PUBLIC_METHODS = frozenset({"Register", "Login", "Refresh", "GetJwks"})


def timestamp(value: datetime) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(value)
    return message


def token_fields(tokens: IssuedTokens) -> dict:
    return {
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "token_type": "bearer",
        "expires_in": tokens.expires_in,
        "expires_at": timestamp(tokens.access_expires_at),
        "refresh_expires_at": timestamp(tokens.refresh_expires_at),
    }


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, accounts: Accounts, keys: KeyRing) -> None:
        self._accounts = accounts
        self._keys = keys

    def _user(self, user: UserRow) -> auth_pb2.User:
        roles = self._accounts.roles_for(user.email)
        return auth_pb2.User(id=user.id, email=user.email, roles=roles, created_at=timestamp(user.created_at))

    async def Register(self, request: auth_pb2.RegisterRequest, context: grpc.aio.ServicerContext):
        user, tokens = await self._accounts.register(request.email, request.password)
        return auth_pb2.RegisterResponse(user=self._user(user), tokens=auth_pb2.TokenPair(**token_fields(tokens)))

    async def Login(self, request: auth_pb2.LoginRequest, context: grpc.aio.ServicerContext):
        if request.grant_type and request.grant_type != "password":
            raise InvalidArgument("grant_type must be 'password'", reason="UNSUPPORTED_GRANT_TYPE")
        tokens = await self._accounts.login(request.email or request.username, request.password)
        return auth_pb2.LoginResponse(**token_fields(tokens))

    async def Refresh(self, request: auth_pb2.RefreshRequest, context: grpc.aio.ServicerContext):
        tokens = await self._accounts.refresh(request.refresh_token)
        return auth_pb2.RefreshResponse(**token_fields(tokens))

    async def Logout(self, request: auth_pb2.LogoutRequest, context: grpc.aio.ServicerContext):
        await self._accounts.logout(current_principal().user_id, request.refresh_token)
        return auth_pb2.LogoutResponse()

    async def GetMe(self, request: auth_pb2.GetMeRequest, context: grpc.aio.ServicerContext):
        user = await self._accounts.me(current_principal().user_id)
        return auth_pb2.GetMeResponse(user=self._user(user))

    async def GetJwks(self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext):
        return auth_pb2.GetJwksResponse(keys=[auth_pb2.JsonWebKey(**jwk) for jwk in self._keys.public_jwks()])
