"""Fast unit tests of the pure rules behind revocation, roles, throttling, service
credentials and the JWKS shape."""

from __future__ import annotations

import hashlib
import time

import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2

from runtime.clients import forward_metadata
from runtime.errors import InvalidArgument
from runtime.principal import Principal, reset_principal, set_principal
from runtime.revocations import FAMILY, USER, Revocation, RevocationSet
from runtime.service_identity import dev_service_credential
from services.auth.keys import generate_key
from services.auth.roles import normalise_roles
from services.auth.server import jwk_message
from services.auth.settings import AuthSettings
from services.auth.throttle import LoginThrottled, account_key


def principal(user_id: str = "u1", family_id: str = "f1", issued_at: float = 100.0) -> Principal:
    return Principal(user_id=user_id, family_id=family_id, issued_at=issued_at)


def test_a_revoked_family_refuses_its_tokens_only() -> None:
    revocations = RevocationSet()
    revocations.apply(Revocation(FAMILY, "f1", time.time() + 60))
    assert revocations.refuses(principal(family_id="f1"))
    assert not revocations.refuses(principal(family_id="f2"))
    assert not revocations.refuses(principal(family_id=""))


def test_a_user_revocation_refuses_tokens_issued_before_it_only() -> None:
    revocations = RevocationSet()
    revocations.apply(Revocation(USER, "u1", time.time() + 60, not_before=100.5))
    assert revocations.refuses(principal(issued_at=100.0))
    assert revocations.refuses(principal(issued_at=100.499))
    assert not revocations.refuses(principal(issued_at=100.5))
    assert not revocations.refuses(principal(user_id="u2", issued_at=1.0))
    # An older revocation arriving late never moves the time back.
    revocations.apply(Revocation(USER, "u1", time.time() + 60, not_before=50.0))
    assert revocations.refuses(principal(issued_at=100.0))


def test_revocations_survive_the_wire_and_expired_ones_are_forgotten() -> None:
    live = [Revocation(FAMILY, "f1", time.time() + 60), Revocation(USER, "u1", time.time() + 60, 123.456)]
    for revocation in live:
        back = Revocation.from_message(revocation.to_message())
        assert back is not None
        assert (back.kind, back.subject) == (revocation.kind, revocation.subject)
        assert back.not_before == pytest.approx(revocation.not_before, abs=1e-6)
    revocations = RevocationSet()
    for revocation in [*live, Revocation(FAMILY, "gone", time.time() - 1)]:
        revocations.apply(revocation)
    assert {r.subject for r in revocations.entries()} == {"f1", "u1"}


def test_roles_keep_user_and_refuse_unknown_names() -> None:
    assert normalise_roles([]) == ["user"]
    assert normalise_roles(["admin"]) == ["user", "admin"]
    assert normalise_roles(["admin", "user", "admin"]) == ["user", "admin"]
    with pytest.raises(InvalidArgument) as refused:
        normalise_roles(["user", "superuser"])
    assert refused.value.reason == "ROLE_UNKNOWN"


def test_a_throttled_login_carries_retry_info() -> None:
    status = LoginThrottled(42).to_status()
    retry = error_details_pb2.RetryInfo()
    assert any(detail.Unpack(retry) for detail in status.details)
    assert retry.retry_delay.seconds == 42
    assert account_key(" Someone@Example.com ") == account_key("someone@example.com")


def test_service_credentials_plain_or_hashed() -> None:
    hashed = hashlib.sha256(b"evals-secret").hexdigest()
    settings = AuthSettings(service_credentials=f"agent=agent-secret, evals=sha256:{hashed}")
    assert settings.service_credential_matches("agent", "agent-secret")
    assert settings.service_credential_matches("evals", "evals-secret")
    assert not settings.service_credential_matches("agent", "evals-secret")
    assert not settings.service_credential_matches("memory", "agent-secret")
    # Once real credentials are configured, the development ones stop working.
    assert not settings.service_credential_matches("agent", dev_service_credential("agent"))
    assert AuthSettings().service_credential_matches("agent", dev_service_credential("agent"))
    assert not AuthSettings().service_credential_matches("agent", dev_service_credential("evals"))


@pytest.mark.parametrize(
    ("algorithm", "members"),
    [("EdDSA", {"kty", "kid", "alg", "use", "crv", "x"}), ("RS256", {"kty", "kid", "alg", "use", "n", "e"})],
)
def test_a_jwk_has_exactly_the_members_of_its_key_type(algorithm: str, members: set[str]) -> None:
    _kid, _private, jwk = generate_key(algorithm)
    message = jwk_message(jwk)
    # The gateway prints every field without presence; optional ones only when set.
    rendered = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    assert set(rendered) == members


def test_a_service_acting_for_a_user_passes_the_user_on() -> None:
    acting = Principal(user_id="u1", service="memory", token="service-token")
    own = Principal(user_id="service:memory", service="memory", token="service-token")
    user = Principal(user_id="u1", token="user-token")
    assert (acting.on_behalf_of, own.on_behalf_of, user.on_behalf_of) == ("u1", "", "")
    for caller, expected in ((acting, ("x-on-behalf-of", "u1")), (own, None), (user, None)):
        reset = set_principal(caller)
        try:
            metadata = forward_metadata()
        finally:
            reset_principal(reset)
        assert ("authorization", f"Bearer {caller.token}") in metadata
        assert (expected in metadata) if expected else all(key != "x-on-behalf-of" for key, _ in metadata)
