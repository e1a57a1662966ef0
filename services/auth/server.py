"""agentmesh.auth.v1.AuthService: parse, call the domain, shape the answer."""

from __future__ import annotations

from datetime import datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agentmesh.auth.v1 import auth_pb2, auth_pb2_grpc
from runtime.errors import InvalidArgument, PermissionDenied, Unavailable
from runtime.principal import current_principal, require_admin
from services.auth.account_queries import UserRow
from services.auth.accounts import Accounts
from services.auth.deletion_queries import DeletionRow
from services.auth.deletions import AUTH_STORE, AccountDeletions
from services.auth.erasure_calls import STEPS
from services.auth.export import AccountExport
from services.auth.keys import KeyRing
from services.auth.revocations import RevocationLog, WatcherLagging
from services.auth.roles import KNOWN_ROLES, Roles
from services.auth.service_tokens import ServiceTokens
from services.auth.tokens import IssuedTokens

# Which RPCs need no token (Register, Login, Refresh, Logout, GetJwks, IssueServiceToken) and
# which only services may call (WatchRevocations) is declared on each RPC in auth.proto
# (agentmesh.options.v1), which serve() reads.
# RFC 7517 members every key has, then those RFC 8037 (OKP) and RFC 7518 (RSA) define.
JWK_MEMBERS = {"OKP": ("crv", "x"), "RSA": ("n", "e")}


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


def receipt_message(deletion: DeletionRow) -> auth_pb2.DeletionReceipt:
    receipt = auth_pb2.DeletionReceipt(
        deletion_id=deletion.id,
        state=auth_pb2.DELETION_STATE_SUCCEEDED if deletion.state == "done" else auth_pb2.DELETION_STATE_PENDING,
        create_time=timestamp(deletion.create_time),
        stores=[
            auth_pb2.StoreReceipt(store=store, done=store in deletion.receipt, counts=deletion.receipt.get(store, {}))
            for store in (AUTH_STORE, *STEPS)
        ],
    )
    if deletion.complete_time is not None:
        receipt.complete_time.CopyFrom(timestamp(deletion.complete_time))
    return receipt


def jwk_message(jwk: dict[str, str]) -> auth_pb2.JsonWebKey:
    """Only the members the key type defines are set (the others stay absent in JSON)."""
    members = JWK_MEMBERS.get(jwk["kty"], ())
    return auth_pb2.JsonWebKey(
        kty=jwk["kty"],
        kid=jwk["kid"],
        alg=jwk["alg"],
        use=jwk["use"],
        **{name: jwk[name] for name in members},
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(
        self,
        accounts: Accounts,
        keys: KeyRing,
        roles: Roles,
        service_tokens: ServiceTokens,
        revocations: RevocationLog,
        deletions: AccountDeletions,
        export: AccountExport,
    ) -> None:
        self._deletions = deletions
        self._export = export
        self._accounts = accounts
        self._keys = keys
        self._roles = roles
        self._service_tokens = service_tokens
        self._revocations = revocations

    @staticmethod
    def _user(user: UserRow, roles: list[str] | None = None) -> auth_pb2.User:
        roles = list(user.roles) if roles is None else roles
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
        await self._accounts.logout(request.refresh_token)
        return auth_pb2.LogoutResponse()

    async def LogoutAll(self, request: auth_pb2.LogoutAllRequest, context: grpc.aio.ServicerContext):
        count = await self._accounts.end_all_sessions(current_principal().user_id, "logout_all")
        return auth_pb2.LogoutAllResponse(count=count)

    async def SetUserRoles(self, request: auth_pb2.SetUserRolesRequest, context: grpc.aio.ServicerContext):
        admin = require_admin()
        user = await self._roles.set_roles(request.user_id, list(request.roles), actor=f"user:{admin.user_id}")
        return auth_pb2.SetUserRolesResponse(user=self._user(user))

    async def GetMe(self, request: auth_pb2.GetMeRequest, context: grpc.aio.ServicerContext):
        principal = current_principal()
        user = await self._accounts.me(principal.user_id)
        # The token's roles are current: a role change revokes the tokens issued before it.
        roles = [role for role in KNOWN_ROLES if role in principal.roles]
        return auth_pb2.GetMeResponse(user=self._user(user, roles))

    async def GetJwks(self, request: auth_pb2.GetJwksRequest, context: grpc.aio.ServicerContext):
        return auth_pb2.GetJwksResponse(keys=[jwk_message(jwk) for jwk in self._keys.public_jwks()])

    async def IssueServiceToken(self, request: auth_pb2.IssueServiceTokenRequest, context: grpc.aio.ServicerContext):
        token, expires_at = self._service_tokens.issue(request.service_name, request.credential)
        return auth_pb2.IssueServiceTokenResponse(
            access_token=token, expires_in=self._service_tokens.ttl_s, expires_at=timestamp(expires_at)
        )

    async def WatchRevocations(self, request: auth_pb2.WatchRevocationsRequest, context: grpc.aio.ServicerContext):
        try:
            async for batch, complete in self._revocations.watch():
                yield auth_pb2.WatchRevocationsResponse(
                    revocations=[r.to_message() for r in batch], snapshot_complete=complete
                )
        except WatcherLagging:
            raise Unavailable("the revocation stream restarted; reconnect", reason="REVOCATION_STREAM_RESET") from None

    async def DeleteAccount(self, request: auth_pb2.DeleteAccountRequest, context: grpc.aio.ServicerContext):
        principal = current_principal()
        if principal.is_service:
            raise PermissionDenied("an account is deleted by its user", reason="USER_TOKEN_REQUIRED")
        if not request.password:
            raise InvalidArgument("password is required", reason="PASSWORD_REQUIRED")
        deletion = await self._deletions.delete_account(principal.user_id, request.password)
        return auth_pb2.DeleteAccountResponse(receipt=receipt_message(deletion))

    async def ExportAccount(self, request: auth_pb2.ExportAccountRequest, context: grpc.aio.ServicerContext):
        if current_principal().is_service:
            raise PermissionDenied("an account is exported by its user", reason="USER_TOKEN_REQUIRED")
        async for record in self._export.records():
            yield record
