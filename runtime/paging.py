"""Keyset paging (AIP-158): a bounded `page_size` with a default, and an opaque
`page_token` that carries the sort key of the last row returned.

One extra row is fetched to know whether another page exists, so no COUNT is needed.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from runtime.errors import InvalidArgument

Row = TypeVar("Row")


def page_size(requested: int, *, default: int, maximum: int) -> int:
    if not 0 <= requested <= maximum:
        raise InvalidArgument(f"page_size must be between 0 and {maximum}", reason="PAGE_SIZE_INVALID")
    return requested or default


def encode_page_token(*sort_key: object) -> str:
    values = [value.isoformat() if isinstance(value, datetime) else str(value) for value in sort_key]
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


# Our tokens are a few short strings; anything much longer is not one of ours.
MAX_PAGE_TOKEN_CHARS = 1024


def decode_page_token(token: str, *parsers: Callable[[Any], Any]) -> tuple[Any, ...]:
    """The sort key in `token`, each part read by its parser; INVALID_ARGUMENT when it is not ours.

    Any string a client sends ends here, so every failure (bad base64, JSON of another shape, a
    parser refusing the value in whatever way it does) is the same INVALID_ARGUMENT, and the
    values that reach SQL are ones the encoder could have written: strings without NUL, and
    datetimes with their offset (the rows' times are timezone-aware).
    """
    try:
        if not isinstance(token, str) or len(token) > MAX_PAGE_TOKEN_CHARS:
            raise ValueError("not a token")
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(values, list) or len(values) != len(parsers):
            raise ValueError("wrong shape")
        for value in values:
            if not isinstance(value, str) or "\x00" in value:
                raise ValueError("wrong values")
            value.encode()  # refuses lone surrogates ("\\ud800" in the JSON), as SQL drivers do
        parsed = tuple(parse(value) for parse, value in zip(parsers, values, strict=True))
        for value in parsed:
            if isinstance(value, datetime):
                if value.utcoffset() is None:
                    raise ValueError("a time without its offset")
                value.astimezone(UTC)  # drivers convert to UTC; year 1 at +14:00 overflows there
        return parsed
    except Exception:
        # Deliberately broad: uuid.UUID raises AttributeError on some inputs, json RecursionError.
        raise InvalidArgument("page_token is not valid", reason="PAGE_TOKEN_INVALID") from None


def one_page(rows: Sequence[Row], size: int, sort_key: Callable[[Row], tuple[object, ...]]) -> tuple[list[Row], str]:
    """Cuts the `size + 1` rows fetched to one page and the token of the next, if any."""
    if len(rows) > size:
        return list(rows[:size]), encode_page_token(*sort_key(rows[size - 1]))
    return list(rows), ""
