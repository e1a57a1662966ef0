"""Checks every request message gets before a servicer sees it, whoever sent it.

Postgres refuses NUL in `text` and `jsonb`, so a NUL that reached a store used to surface as
INTERNAL (with the SQL parameters, user text included, in the log). Refusing it at the door
answers INVALID_ARGUMENT for gRPC callers and the gateway alike, for every string field of every
RPC, present and future, instead of one check per field.

The walk visits only the fields that are set (`ListFields`), so an ordinary request costs a few
microseconds. Error messages name the field path, never its content: they are logged.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor
from google.protobuf.message import DecodeError, Message

from runtime.errors import InvalidArgument

FieldDescriptor = descriptor.FieldDescriptor

INVALID_TEXT = "INVALID_TEXT"
INVALID_ENUM_VALUE = "INVALID_ENUM_VALUE"
MALFORMED_REQUEST = "MALFORMED_REQUEST"

# Deeper than any of our messages nest; protobuf's own parser stops at 100.
_MAX_DEPTH = 64


def check_request(message: Message) -> None:
    """Raises InvalidArgument when a string holds NUL or is not valid Unicode text, or an enum
    field holds a number its enum does not define."""
    _check(message, "", 0)


# Whether a field is a map, per descriptor: GetOptions() costs more than the rest of the walk.
_IS_MAP: dict[FieldDescriptor, bool] = {}


def _is_map(field: FieldDescriptor) -> bool:
    known = _IS_MAP.get(field)
    if known is None:
        known = _IS_MAP[field] = field.message_type is not None and field.message_type.GetOptions().map_entry
    return known


def _check(message: Message, prefix: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise InvalidArgument("the request nests too deeply", reason=MALFORMED_REQUEST)
    for field, value in message.ListFields():
        path = prefix + field.name
        if _is_map(field):
            _check_map(field, value, path, depth)
        elif field.is_repeated:
            for index, item in enumerate(value):
                _check_value(field, item, f"{path}[{index}]", depth)
        else:
            _check_value(field, value, path, depth)


def _check_map(field: FieldDescriptor, value: Any, path: str, depth: int) -> None:
    entry = field.message_type
    assert entry is not None  # _is_map said so
    key_field = entry.fields_by_name["key"]
    value_field = entry.fields_by_name["value"]
    for key, item in value.items():
        # The key is user content: the path says only that it is a key of this map.
        _check_value(key_field, key, f"{path} (a key)", depth)
        _check_value(value_field, item, f"{path}[...]", depth)


# `value: Any`: its Python type follows `field.type` (str, int, Message, ...), which only the
# branches below know.
def _check_value(field: FieldDescriptor, value: Any, path: str, depth: int) -> None:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        _check_text(value, path)
    elif kind == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        assert enum is not None  # every enum field has its enum's descriptor
        if enum.values_by_number.get(value) is None:
            raise InvalidArgument(f"{path} is not a value of {enum.full_name}", reason=INVALID_ENUM_VALUE)
    elif kind in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        _check(value, path + ".", depth + 1)


def _check_text(text: str, path: str) -> None:
    # Invalid UTF-8 never gets this far: the parser refuses it on the wire (tolerant_deserializer
    # makes that INVALID_ARGUMENT), and protobuf refuses lone surrogates on assignment.
    if "\x00" in text:
        raise InvalidArgument(f"{path} contains a NUL character, which text fields cannot hold", reason=INVALID_TEXT)


class UndecodableRequest:
    """Stands in for a request whose bytes did not parse, so the call can answer
    INVALID_ARGUMENT instead of grpc's own INTERNAL "Exception deserializing request"."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def tolerant_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """Wraps a handler's request deserializer: a parse failure (invalid UTF-8 in a string field,
    truncated bytes) becomes an UndecodableRequest that `raise_if_undecodable` refuses."""
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except (DecodeError, ValueError, RuntimeError) as exc:
            return UndecodableRequest(exc)

    return parse


def raise_if_undecodable(request: object) -> None:
    if isinstance(request, UndecodableRequest):
        raise InvalidArgument("the request message could not be parsed", reason=MALFORMED_REQUEST)


def validate_request(request: object) -> None:
    """The interceptor's one call: an unparsable request or an invalid field is INVALID_ARGUMENT."""
    raise_if_undecodable(request)
    if isinstance(request, Message):
        check_request(request)


def crash_report(exc: BaseException) -> dict[str, object]:
    """What a log may say about an unexpected exception: its type, its causes' types and where it
    happened (file, line, code), never its message. Messages carry values: asyncpg's
    "invalid input for query argument $1: '<the user's text>'", a KeyError's key, a parser's input.
    """
    causes: list[str] = []
    cause = exc.__cause__ or exc.__context__
    while cause is not None and len(causes) < 5:
        causes.append(type(cause).__qualname__)
        cause = cause.__cause__ or cause.__context__
    return {
        "error_type": type(exc).__qualname__,
        "caused_by": causes,
        "stack": [line.rstrip() for line in traceback.format_tb(exc.__traceback__)[-8:]],
    }
