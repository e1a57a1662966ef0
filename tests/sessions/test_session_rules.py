"""The pure rules of chat sessions (services/sessions/chat_sessions.py): names, ids and expiry,
without processes. The same rules over gRPC and HTTP are in test_sessions.py and test_http_forms.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from runtime.errors import InvalidArgument
from services.sessions.chat_sessions import MAX_NAME_LENGTH, MAX_TTL, Expiry, clean_name, parse_session_id

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CANONICAL = "0b6c7f8e-3d1a-4c2b-9e5f-1a2b3c4d5e6f"


def reason(call: object, *args: object, **kwargs: object) -> str:
    with pytest.raises(InvalidArgument) as raised:
        call(*args, **kwargs)  # type: ignore[operator]
    return raised.value.reason


def test_a_name_is_trimmed() -> None:
    assert clean_name("  trip to Rome \t", required=True) == "trip to Rome"


def test_an_empty_or_blank_name_is_refused_only_when_required() -> None:
    assert reason(clean_name, " \t ", required=True) == "NAME_REQUIRED"
    assert clean_name(" \t ", required=False) == ""


def test_the_length_limit_counts_characters_after_trimming() -> None:
    assert clean_name("é" * MAX_NAME_LENGTH, required=True) == "é" * MAX_NAME_LENGTH
    assert clean_name(" " + "a" * MAX_NAME_LENGTH + " ", required=True) == "a" * MAX_NAME_LENGTH
    assert reason(clean_name, "a" * (MAX_NAME_LENGTH + 1), required=False) == "NAME_TOO_LONG"


@pytest.mark.parametrize("name", ["a\nb", "a\x00b", "a\x1bb", "a\x7fb", "tab\tinside"])
def test_control_characters_inside_a_name_are_refused(name: str) -> None:
    assert reason(clean_name, name, required=True) == "NAME_INVALID"


def test_markup_and_non_latin_text_are_plain_names() -> None:
    for name in ("<b>bold</b>", "Reise nach Köln", "旅行", "🚀 launch"):
        assert clean_name(name, required=True) == name


def test_a_session_id_must_be_the_canonical_spelling() -> None:
    assert str(parse_session_id(CANONICAL)) == CANONICAL
    assert reason(parse_session_id, CANONICAL.upper()) == "SESSION_ID_INVALID"
    assert reason(parse_session_id, "") == "SESSION_ID_REQUIRED"


def test_no_expiry_is_no_expiry() -> None:
    assert Expiry().resolve(NOW) is None


def test_a_time_to_live_counts_from_now() -> None:
    assert Expiry(ttl=timedelta(hours=2)).resolve(NOW) == NOW + timedelta(hours=2)
    assert Expiry(ttl=MAX_TTL).resolve(NOW) == NOW + MAX_TTL


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(seconds=-1), MAX_TTL + timedelta(seconds=1)])
def test_a_time_to_live_must_be_positive_and_bounded(ttl: timedelta) -> None:
    assert reason(Expiry(ttl=ttl).resolve, NOW) == "TTL_INVALID"


def test_an_expire_time_must_be_in_the_future_and_within_the_bound() -> None:
    assert Expiry(expire_time=NOW + timedelta(days=1)).resolve(NOW) == NOW + timedelta(days=1)
    assert reason(Expiry(expire_time=NOW).resolve, NOW) == "EXPIRE_TIME_INVALID"
    assert reason(Expiry(expire_time=NOW + MAX_TTL + timedelta(days=1)).resolve, NOW) == "EXPIRE_TIME_INVALID"


def test_expire_time_and_ttl_together_are_refused() -> None:
    both = Expiry(expire_time=NOW + timedelta(days=1), ttl=timedelta(hours=1))
    assert reason(both.resolve, NOW) == "EXPIRE_TIME_CONFLICT"
