"""Service identity: credentials for service tokens, service-only RPCs, acting on behalf
of a user, and the refusal of development secrets in staging and production."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
import uuid

import grpc
import jwt
import pytest

from agentmesh.auth.v1 import auth_pb2
from meshctl.processes import ROOT
from runtime.registry import grpc_services
from runtime.service_identity import dev_service_credential, service_credential_for
from runtime.settings import SettingsError, TokenClientSettings
from services.auth.settings import DEV_SIGNING_KEY_SECRET, AuthSettings
from tests.support.grpc_errors import rpc_failure
from tests.support.services import service_metadata, service_token
from tests.support.tokens import sign
from tests.support.users import MeshUser

STRONG_SECRET = "a-strong-signing-key-secret-of-more-than-32-chars"


async def test_a_service_gets_a_short_lived_token_with_its_credential(auth_stub) -> None:
    token = await service_token(auth_stub, "agent")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["sub"], claims["svc"], claims["roles"]) == ("service:agent", "agent", ["service"])
    assert claims["exp"] - time.time() <= 300 + 5
    assert "fid" not in claims and "email" not in claims


@pytest.mark.parametrize(
    ("name", "credential"),
    [
        ("agent", "wrong"),
        ("agent", dev_service_credential("evals")),  # another service's credential
        ("root", dev_service_credential("root") + "x"),
        ("", dev_service_credential("agent")),
    ],
)
async def test_a_wrong_service_credential_is_refused(auth_stub, name: str, credential: str) -> None:
    failure = await rpc_failure(
        auth_stub.IssueServiceToken(auth_pb2.IssueServiceTokenRequest(service_name=name, credential=credential))
    )
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "SERVICE_CREDENTIAL_INVALID")


async def test_service_only_rpcs_refuse_end_users(auth_stub, user: MeshUser, admin: MeshUser) -> None:
    for caller in (user, admin):
        stream = auth_stub.WatchRevocations(auth_pb2.WatchRevocationsRequest(), metadata=caller.metadata)
        failure = await rpc_failure(stream.read())
        assert (failure.code, failure.reason) == (grpc.StatusCode.PERMISSION_DENIED, "SERVICE_ONLY")


async def test_a_service_follows_revocations(auth_stub, user: MeshUser) -> None:
    await auth_stub.Logout(auth_pb2.LogoutRequest(refresh_token=user.refresh_token))
    family = jwt.decode(user.access_token, options={"verify_signature": False})["fid"]
    stream = auth_stub.WatchRevocations(auth_pb2.WatchRevocationsRequest(), metadata=await service_metadata(auth_stub))
    seen = set()
    async for batch in stream:
        seen.update(r.family_id for r in batch.revocations)
        if batch.snapshot_complete:
            break
    stream.cancel()
    assert family in seen


async def test_on_behalf_of_is_honoured_for_services_only(auth_stub, user: MeshUser, other_user: MeshUser) -> None:
    spoofed = (*user.metadata, ("x-on-behalf-of", other_user.user_id))
    me = await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=spoofed)
    assert me.user.id == user.user_id
    as_service = await service_metadata(auth_stub, "memory", on_behalf_of=other_user.user_id)
    me = await auth_stub.GetMe(auth_pb2.GetMeRequest(), metadata=as_service)
    assert me.user.id == other_user.user_id


async def test_a_user_token_cannot_pass_for_a_service_token(auth_stub, signing_key, user: MeshUser) -> None:
    now = int(time.time())
    base = {"iss": "agentmesh-auth", "aud": "agentmesh", "iat": now, "exp": now + 600, "jti": uuid.uuid4().hex}
    for claims in (
        {**base, "sub": user.user_id, "roles": ["user", "service"]},  # the role without the claim
        {**base, "sub": user.user_id, "roles": ["user"], "svc": "agent"},  # the claim without the role
    ):
        failure = await rpc_failure(
            auth_stub.GetMe(
                auth_pb2.GetMeRequest(), metadata=(("authorization", f"Bearer {sign(signing_key, claims)}"),)
            )
        )
        assert (failure.code, failure.reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_INVALID")


@pytest.mark.parametrize("app_env", ["staging", "production"])
def test_staging_and_production_refuse_development_secrets(app_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SIGNING_KEY_SECRET", "SERVICE_CREDENTIALS", "SERVICE_CREDENTIAL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    good = {"database_url": "postgresql://db/agentmesh", "service_credentials": "agent=s3cret-agent-credential"}
    for secret in ("", DEV_SIGNING_KEY_SECRET):
        with pytest.raises(ValueError, match=f"unsafe settings for APP_ENV={app_env}.*SIGNING_KEY_SECRET"):
            AuthSettings(app_env=app_env, signing_key_secret=secret, **good)
    dev_credentials = f"agent={dev_service_credential('agent')}"
    with pytest.raises(ValueError, match="development credentials for: agent"):
        AuthSettings(
            app_env=app_env,
            signing_key_secret=STRONG_SECRET,
            database_url="postgresql://db/agentmesh",
            service_credentials=dev_credentials,
        )
    AuthSettings(app_env=app_env, signing_key_secret=STRONG_SECRET, **good)
    database = {"database_url": "postgresql://db/agentmesh"}
    for credential in ("", dev_service_credential("agent")):
        with pytest.raises(SettingsError, match="SERVICE_CREDENTIAL"):
            settings = TokenClientSettings(app_env=app_env, service_credential=credential, **database)
            service_credential_for(settings, "agent")
    settings = TokenClientSettings(app_env=app_env, service_credential="s3cret", **database)
    assert service_credential_for(settings, "agent") == "s3cret"


def test_development_uses_the_public_development_credential() -> None:
    settings = TokenClientSettings(app_env="development")
    assert service_credential_for(settings, "agent") == dev_service_credential("agent")


def test_auth_in_staging_with_the_development_signing_secret_exits_with_a_clear_message() -> None:
    env = {**os.environ, "APP_ENV": "staging", "DATABASE_URL": "postgresql://127.0.0.1:1/none"}
    env.pop("SIGNING_KEY_SECRET", None)
    result = subprocess.run(
        [sys.executable, "-m", "services.auth"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0
    assert "unsafe settings for APP_ENV=staging" in result.stderr
    assert "SIGNING_KEY_SECRET" in result.stderr
    assert "Traceback" not in result.stderr


def test_only_the_auth_services_clients_read_its_address_and_a_service_credential() -> None:
    client_fields = set(TokenClientSettings.model_fields) - set(AuthSettings.model_fields)
    assert {"auth_addr", "jwks_cache_ttl_s", "service_credential"} <= client_fields
    for entry in grpc_services():
        module_name, class_name = entry.settings_class.split(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        assert issubclass(cls, TokenClientSettings) == (entry.name != "auth"), entry.settings_class
