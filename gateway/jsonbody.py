"""Reading a JSON request body safely, checking its shape against the request message, and
merging JSON values into that message (the body, and the query and path values as JSON).

`json.loads` alone lets through what later code chokes on: nesting deep enough to exhaust the
stack (RecursionError, a 500), integers with thousands of digits, NaN, duplicate keys (which one
wins?). And json_format's errors for a value of the wrong type are cryptic: a string where a
message belongs reads as an object whose keys are its characters ("has no field named "h"").
The shape check runs first and names the field and the shape it expects.
"""

from __future__ import annotations

import json
from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor, json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2

from gateway.errors import GatewayError, invalid_argument

FieldDescriptor = descriptor.FieldDescriptor

# Our messages nest a few levels; protobuf's own parser stops at 100.
MAX_JSON_DEPTH = 32

INTEGER_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_FIXED32,
    FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32,
    FieldDescriptor.TYPE_SFIXED64,
}
FLOAT_TYPES = {FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE}
_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
_WELL_KNOWN_SHAPES = {
    "google.protobuf.Timestamp": ('an RFC 3339 timestamp string such as "2026-01-31T12:00:00Z"', (str,)),
    "google.protobuf.Duration": ('a duration string such as "3.5s"', (str,)),
    "google.protobuf.FieldMask": ('a comma-separated list of field names such as "name,expire_time"', (str,)),
    "google.protobuf.Empty": ("an empty object", (dict,)),
    "google.protobuf.Struct": ("an object", (dict,)),
    "google.protobuf.ListValue": ("an array", (list,)),
    "google.protobuf.Value": ("any JSON value", (dict, list, str, int, float, bool, type(None))),
    "google.protobuf.Any": ('an object with "@type"', (dict,)),
    "google.protobuf.DoubleValue": ("a number", (int, float, str)),
    "google.protobuf.FloatValue": ("a number", (int, float, str)),
    "google.protobuf.Int64Value": ("an integer", (int, str)),
    "google.protobuf.UInt64Value": ("an integer", (int, str)),
    "google.protobuf.Int32Value": ("an integer", (int, str)),
    "google.protobuf.UInt32Value": ("an integer", (int, str)),
    "google.protobuf.BoolValue": ("true or false", (bool,)),
    "google.protobuf.StringValue": ("a string", (str,)),
    "google.protobuf.BytesValue": ("a base64 string", (str,)),
}


class _Duplicate(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(key)
        result[key] = value
    return result


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(body: bytes) -> Any:
    """The parsed body, or a 400 that says what is wrong with it (never another exception)."""
    try:
        value = json.loads(body, object_pairs_hook=_object_without_duplicates, parse_constant=_refuse_constant)
    except _Duplicate as exc:
        raise invalid_argument(f"the JSON object repeats the key {str(exc)!r}", reason="MALFORMED_JSON") from None
    except RecursionError:
        raise _too_deep() from None
    except UnicodeDecodeError:
        raise invalid_argument("request body is not valid UTF-8", reason="MALFORMED_JSON") from None
    except json.JSONDecodeError as exc:
        raise invalid_argument(f"request body is not valid JSON: {exc}", reason="MALFORMED_JSON") from None
    except ValueError as exc:
        # Integers beyond Python's digit limit, NaN/Infinity literals.
        raise invalid_argument(f"request body is not valid JSON: {exc}", reason="MALFORMED_JSON") from None
    _check_depth(value)
    return value


def _too_deep() -> GatewayError:
    return invalid_argument(f"the JSON nests deeper than {MAX_JSON_DEPTH} levels", reason="MALFORMED_JSON")


def _check_depth(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise _too_deep()
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)


def describe_message(message: descriptor.Descriptor) -> str:
    """`an object with "role" and "content"`: how a reader writes this message in JSON."""
    # Output-only fields (a message's `interrupted` flag, times) are not what a client writes.
    names = [f'"{field.name}"' for field in message.fields if not _output_only(field)]
    if not names:
        return "an object"
    if len(names) > 6:
        return f"an object with fields such as {', '.join(names[:6])}"
    if len(names) == 1:
        return f"an object with {names[0]}"
    return f"an object with {', '.join(names[:-1])} and {names[-1]}"


def _output_only(field: FieldDescriptor) -> bool:
    behaviors = field.GetOptions().Extensions[field_behavior_pb2.field_behavior]
    return field_behavior_pb2.OUTPUT_ONLY in behaviors


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _wrong_shape(path: str, expected: str, value: Any) -> GatewayError:
    description = f"{expected}, not {_json_type(value)}"
    violation = error_details_pb2.BadRequest.FieldViolation(field=path, description=description)
    error = invalid_argument(f"field {path!r} must be {description}", reason="INVALID_FIELD_VALUE")
    error.details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    return error


def check_shape(value: Any, message: descriptor.Descriptor, path: str = "") -> None:
    """Raises a 400 naming the first field whose JSON type cannot be this message's field.

    Enum values given by their short name (`ENQUEUE` for `MULTITASK_STRATEGY_ENQUEUE`) are
    rewritten in place to the full name json_format expects.
    """
    if not isinstance(value, dict):
        raise _wrong_shape(path or "(body)", describe_message(message), value)
    for key, item in value.items():
        field = message.fields_by_name.get(key) or message.fields_by_camelcase_name.get(key)
        where = f"{path}.{key}" if path else key
        if field is None:
            known = ", ".join(f'"{f.name}"' for f in message.fields) or "none"
            error = invalid_argument(
                f"unknown field {where!r}: {message.full_name} has the fields {known}", reason="UNKNOWN_FIELD"
            )
            raise error
        if item is None:
            continue  # null means the default, as in proto3 JSON
        value[key] = _check_field(field, item, where)


def _check_field(field: FieldDescriptor, value: Any, path: str) -> Any:
    """The value to parse: unchanged, except enum short names (`ENQUEUE`) made full."""
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        if not isinstance(value, dict):
            raise _wrong_shape(path, "an object (a map)", value)
        value_field = entry.fields_by_name["value"]
        return {key: _check_single(value_field, item, f"{path}[{key!r}]") for key, item in value.items()}
    if field.is_repeated:
        if not isinstance(value, list):
            raise _wrong_shape(path, f"an array of {_expected(field)}", value)
        return [_check_single(field, item, f"{path}[{index}]") for index, item in enumerate(value)]
    return _check_single(field, value, path)


def _expected(field: FieldDescriptor) -> str:
    if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        known = _WELL_KNOWN_SHAPES.get(field.message_type.full_name)
        return known[0] if known else describe_message(field.message_type)
    if field.type == FieldDescriptor.TYPE_ENUM:
        names = [v.name for v in field.enum_type.values if v.number != 0] or [v.name for v in field.enum_type.values]
        return "one of " + ", ".join(names)
    if field.type == FieldDescriptor.TYPE_STRING:
        return "a string"
    if field.type == FieldDescriptor.TYPE_BYTES:
        return "a base64 string"
    if field.type == FieldDescriptor.TYPE_BOOL:
        return "true or false"
    if field.type in INTEGER_TYPES:
        low, high = _RANGES[field.type]
        return f"an integer from {low} to {high}"
    return "a number"


def _check_single(field: FieldDescriptor, value: Any, path: str) -> Any:
    kind = field.type
    if value is None:
        raise _wrong_shape(path, _expected(field), value)
    if kind in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
        known = _WELL_KNOWN_SHAPES.get(field.message_type.full_name)
        if known is not None:
            if not isinstance(value, known[1]) or (isinstance(value, bool) and bool not in known[1]):
                raise _wrong_shape(path, known[0], value)
            return value
        check_shape(value, field.message_type, path)
        return value
    if kind == FieldDescriptor.TYPE_ENUM:
        return _enum_value(field, value, path)
    ok: bool
    if kind in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
        ok = isinstance(value, str)
    elif kind == FieldDescriptor.TYPE_BOOL:
        ok = isinstance(value, bool)
    elif kind in INTEGER_TYPES:
        ok = _integer_in_range(kind, value)
    else:  # float, double: numbers, or the strings proto3 JSON allows ("NaN", "1.5")
        ok = isinstance(value, int | float | str) and not isinstance(value, bool)
    if not ok:
        raise _wrong_shape(path, _expected(field), value)
    return value


def _enum_value(field: FieldDescriptor, value: Any, path: str) -> Any:
    enum = field.enum_type
    if isinstance(value, int) and not isinstance(value, bool):
        if value in enum.values_by_number:
            return value
    elif isinstance(value, str):
        if value in enum.values_by_name:
            return value
        full = full_enum_name(enum, value)
        if full is not None:
            return full
    raise _wrong_shape(path, _expected(field), value)


def full_enum_name(enum: descriptor.EnumDescriptor, short: str) -> str | None:
    """`MULTITASK_STRATEGY_ENQUEUE` for `ENQUEUE`: the one value whose name ends in `_<short>`, if just one does."""
    matches = [v.name for v in enum.values if v.name.endswith("_" + short)]
    return matches[0] if len(matches) == 1 else None


def _integer_in_range(kind: int, value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        if not value.is_integer():
            return False
        value = int(value)
    elif isinstance(value, str):
        # proto3 JSON writes 64-bit integers as strings; any integer may come as one.
        text = value.strip()
        if not text or len(text) > 21 or not text.lstrip("-").isascii() or not text.lstrip("-").isdigit():
            return False
        value = int(text)
    elif not isinstance(value, int):
        return False
    low, high = _RANGES[kind]
    return low <= value <= high


def merge_json_body(message: Message, body_field: str, body: bytes) -> None:
    """Sets the request fields the JSON body carries: all of them for `*`, else the one named `body_field`."""
    value = load_json(body)
    if body_field == "*":
        if not isinstance(value, dict):
            raise invalid_argument(
                f"request body must be {describe_message(message.DESCRIPTOR)}, not {type(value).__name__}",
                reason="MALFORMED_JSON",
            )
        check_shape(value, message.DESCRIPTOR)
        parse_dict(value, message)
        return
    wrapped: Any = value
    for name in reversed(body_field.split(".")):
        wrapped = {name: wrapped}
    check_shape(wrapped, message.DESCRIPTOR)
    parse_dict(wrapped, message)


def parse_dict(value: dict[str, Any], message: Message) -> None:
    """Merges a proto3 JSON value into the message; a value json_format refuses is a 400."""
    if not value:
        return
    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise invalid_argument(str(exc), reason="INVALID_FIELD_VALUE") from exc
    except (ValueError, TypeError, RecursionError) as exc:
        raise invalid_argument(f"invalid request: {exc}", reason="INVALID_FIELD_VALUE") from exc
