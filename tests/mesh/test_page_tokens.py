"""Page tokens are client input: any string decodes to a sort key the encoder could have written,
or is INVALID_ARGUMENT (PAGE_TOKEN_INVALID); no other exception ever leaves decode_page_token."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime.errors import InvalidArgument
from runtime.paging import decode_page_token, encode_page_token

# The parsers the services pass today (sessions and memory; evals).
PARSER_SETS = [
    (datetime.fromisoformat, uuid.UUID),
    (datetime.fromisoformat, str, str),
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)


def as_token(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def plausible_parts() -> st.SearchStrategy[list[str]]:
    # Lists of the right length of texts that look like ours, to reach the parsers.
    part = st.one_of(
        st.text(),
        st.datetimes(timezones=st.none() | st.timezones()).map(lambda d: d.isoformat()),
        st.uuids().map(str),
        st.sampled_from(["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "\x00", "\ud800"]),
    )
    return st.lists(part, min_size=2, max_size=3)


tokens = st.one_of(
    st.text(),
    st.binary().map(lambda b: base64.urlsafe_b64encode(b).decode()),
    json_values.map(as_token),
    plausible_parts().map(as_token),
    st.sampled_from(["%ff", "[" * 1000, as_token([[]] * 2), as_token({"a": 1}), as_token("[" * 100_000)]),
)


def check(token: str) -> None:
    for parsers in PARSER_SETS:
        try:
            parsed = decode_page_token(token, *parsers)
        except InvalidArgument as exc:
            assert exc.reason == "PAGE_TOKEN_INVALID"
            continue
        assert len(parsed) == len(parsers)
        for value in parsed:
            if isinstance(value, datetime):
                assert value.utcoffset() is not None
                value.astimezone(UTC)
            if isinstance(value, str):
                assert "\x00" not in value
                value.encode()


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tokens)
def test_any_string_is_a_sort_key_or_invalid_argument(token: str) -> None:
    check(token)


@pytest.mark.parametrize(
    "token",
    [
        "%ff",
        as_token(["2024-01-01T00:00:00+00:00", ["y"]]),  # uuid.UUID raised AttributeError
        as_token([1, 2]),
        as_token(["2024-01-01T00:00:00", str(uuid.uuid4())]),  # no offset
        as_token(["0001-01-01T00:00:00+14:00", str(uuid.uuid4())]),
        "W" * 5000,
        as_token("[" * 100_000),
    ],
)
def test_known_bad_tokens_are_invalid_argument(token: str) -> None:
    with pytest.raises(InvalidArgument):
        decode_page_token(token, datetime.fromisoformat, uuid.UUID)


def test_a_token_we_wrote_reads_back() -> None:
    when, ident = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), uuid.uuid4()
    assert decode_page_token(encode_page_token(when, ident), datetime.fromisoformat, uuid.UUID) == (when, ident)
