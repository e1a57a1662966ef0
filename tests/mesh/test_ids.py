"""The one canonical id spelling (runtime/ids.py): pure rules, no processes."""

from __future__ import annotations

import uuid

import pytest

from runtime.errors import InvalidArgument, PermissionDenied
from runtime.ids import acting_user_id, is_canonical_id, parse_id, parse_uuid
from runtime.principal import Principal

CANONICAL = "0b6c7f8e-3d1a-4c2b-9e5f-1a2b3c4d5e6f"


def non_canonical_spellings(value: str) -> list[str]:
    """Every other spelling `uuid.UUID()` accepts for the same id, plus near misses."""
    parsed = uuid.UUID(value)
    return [
        value.upper(),
        parsed.hex,
        "{" + value + "}",
        parsed.urn,
        f" {value}",
        f"{value}\n",
        value[:-1],
        value + "0",
        value.replace("-", "_"),
    ]


def test_canonical_id_passes_unchanged() -> None:
    assert parse_id(CANONICAL, "session_id") == CANONICAL
    assert parse_uuid(CANONICAL, "memory_id") == uuid.UUID(CANONICAL)
    assert is_canonical_id(str(uuid.uuid4()))


@pytest.mark.parametrize("spelling", non_canonical_spellings(CANONICAL))
@pytest.mark.parametrize(("field", "reason"), [("session_id", "SESSION_ID_INVALID"), ("run_id", "RUN_ID_INVALID")])
def test_every_other_spelling_is_refused(spelling: str, field: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_id(spelling, field)
    assert refused.value.reason == reason
    assert field in refused.value.message


def test_empty_is_required_unless_optional() -> None:
    with pytest.raises(InvalidArgument) as refused:
        parse_id("", "trace_id")
    assert refused.value.reason == "TRACE_ID_REQUIRED"
    assert parse_id("", "session_id", required=False) == ""
    with pytest.raises(InvalidArgument):
        parse_id(CANONICAL.upper(), "session_id", required=False)


def test_acting_user_id() -> None:
    user = str(uuid.uuid4())
    assert acting_user_id(Principal(user_id=user)) == user
    assert acting_user_id(Principal(user_id=user, service="agent")) == user
    with pytest.raises(PermissionDenied) as bare:
        acting_user_id(Principal(user_id="service:agent", service="agent"))
    assert bare.value.reason == "ON_BEHALF_OF_REQUIRED"
    with pytest.raises(InvalidArgument) as bogus:
        acting_user_id(Principal(user_id=user.upper(), service="agent"))
    assert bogus.value.reason == "ON_BEHALF_OF_INVALID"
