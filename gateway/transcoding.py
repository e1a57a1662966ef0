"""HTTP request -> request message, and response message -> JSON, following google.api.http rules."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

import grpc
from google.protobuf import descriptor, json_format
from google.protobuf.message import Message

from gateway.descriptors import HttpBinding
from gateway.errors import GatewayError, invalid_argument
from gateway.jsonbody import FLOAT_TYPES, INTEGER_TYPES, full_enum_name, merge_json_body, parse_dict

FieldDescriptor = descriptor.FieldDescriptor

JSON_TYPES = ("application/json",)
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

# Well-known types whose JSON form is a string, so a query or path value can carry them.
_STRING_JSON_TYPES = {
    "google.protobuf.Timestamp",
    "google.protobuf.Duration",
    "google.protobuf.FieldMask",
}
_WRAPPER_TYPES = {
    f"google.protobuf.{name}Value"
    for name in ("Double", "Float", "Int64", "UInt64", "Int32", "UInt32", "Bool", "String", "Bytes")
}
# OAuth2 token-request parameters (RFC 6749 sections 2.3.1 and 4.3.2) that a password-grant form may
# carry even when the request message does not model them; every other unknown form field is an error.
OAUTH2_IGNORED_FORM_FIELDS = frozenset({"scope", "client_id", "client_secret"})


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(media: str) -> bool:
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


def build_request(
    binding: HttpBinding,
    path_variables: Mapping[str, str],
    query_string: str,
    body: bytes,
    content_type: str | None,
    form: Sequence[tuple[str, str]] | None = None,
) -> Message:
    """The request message for one HTTP request. Raises GatewayError (400/415) on bad input.

    `form` carries already-parsed form fields (multipart needs an async parser); when it is None
    and the body is urlencoded, it is parsed here.
    """
    message = binding.request_class()
    request_descriptor = message.DESCRIPTOR
    media = media_type(content_type)
    consumed: set[str] = set(path_variables)

    if binding.body:
        if binding.body != "*":
            consumed.add(binding.body)
        if body.strip() or form:
            if is_json(media):
                merge_json_body(message, binding.body, body)
            elif media in FORM_TYPES and binding.body == "*":
                pairs = form if form is not None else _parse_urlencoded(body)
                _merge_params(message, pairs, consumed=set(path_variables), ignored=OAUTH2_IGNORED_FORM_FIELDS)
            else:
                supported = "application/json" + (" or a form" if binding.body == "*" else "")
                raise GatewayError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"unsupported content type {media or '(none)'!r}; send {supported}",
                    reason="UNSUPPORTED_MEDIA_TYPE",
                    http_status=415,
                )

    query = parse_query(query_string)
    if query and binding.body == "*":
        raise invalid_argument(
            "query parameters are not accepted here: the whole request comes from the body",
            reason="UNKNOWN_FIELD",
        )
    _merge_params(message, query, consumed=consumed)

    # Path variables are bound last so they win over the same field in a body, as grpc-gateway does.
    path_dict: dict[str, Any] = {}
    for field_path, text in path_variables.items():
        fields = _resolve(request_descriptor, field_path.split("."), field_path)
        _assign(path_dict, fields, [text], field_path)
    parse_dict(path_dict, message)
    return message


# More parameters than any request message has fields; a flood is refused, not parsed.
MAX_PARAMETERS = 200


def parse_query(query_string: str) -> list[tuple[str, str]]:
    """`a=1&b=%C3%A9` -> pairs; 400 when the percent-decoded bytes are not UTF-8."""
    if not query_string:
        return []
    try:
        return parse_qsl(query_string, keep_blank_values=True, errors="strict", max_num_fields=MAX_PARAMETERS)
    except UnicodeDecodeError:
        raise invalid_argument(
            "a query parameter is not valid UTF-8 once percent-decoded", reason="MALFORMED_QUERY"
        ) from None
    except ValueError:
        raise invalid_argument(f"more than {MAX_PARAMETERS} query parameters", reason="MALFORMED_QUERY") from None


def _parse_urlencoded(body: bytes) -> list[tuple[str, str]]:
    try:
        return parse_qsl(body.decode(), keep_blank_values=True, errors="strict", max_num_fields=MAX_PARAMETERS)
    except UnicodeDecodeError as exc:
        raise invalid_argument("form body is not UTF-8", reason="MALFORMED_FORM") from exc
    except ValueError:
        raise invalid_argument(f"more than {MAX_PARAMETERS} form fields", reason="MALFORMED_FORM") from None


def _merge_params(
    message: Message,
    pairs: Iterable[tuple[str, str]],
    *,
    consumed: set[str],
    ignored: frozenset[str] = frozenset(),
) -> None:
    """Query or form parameters: `a.b=1` sets a nested field, a repeated key appends."""
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    tree: dict[str, Any] = {}
    for key, values in grouped.items():
        names = key.split(".")
        try:
            fields = _resolve(message.DESCRIPTOR, names, key)
        except GatewayError:
            if key in ignored:
                continue
            raise
        proto_path = ".".join(f.name for f in fields)
        for taken in consumed:
            if proto_path == taken or proto_path.startswith(taken + ".") or taken.startswith(proto_path + "."):
                raise invalid_argument(
                    f"parameter {key!r} is already bound by the path or body", reason="UNKNOWN_FIELD"
                )
        _assign(tree, fields, values, key)
    parse_dict(tree, message)


def _resolve(message: descriptor.Descriptor, names: list[str], key: str) -> list[FieldDescriptor]:
    fields: list[FieldDescriptor] = []
    current: descriptor.Descriptor | None = message
    for name in names:
        found = None
        if current is not None:
            found = current.fields_by_name.get(name) or current.fields_by_camelcase_name.get(name)
        if found is None:
            raise invalid_argument(f"unknown field {key!r} in {message.full_name}", reason="UNKNOWN_FIELD")
        if fields and fields[-1].is_repeated:
            raise invalid_argument(f"{key!r}: cannot address a field inside a repeated field")
        fields.append(found)
        current = found.message_type if _is_plain_message(found) else None
    return fields


def _is_plain_message(field: FieldDescriptor) -> bool:
    message_type = field.message_type
    if message_type is None or message_type.GetOptions().map_entry:
        return False
    name = message_type.full_name
    return name not in _STRING_JSON_TYPES and name not in _WRAPPER_TYPES


def _assign(tree: dict[str, Any], fields: list[FieldDescriptor], values: list[str], key: str) -> None:
    node = tree
    for field in fields[:-1]:
        node = node.setdefault(field.name, {})
    leaf = fields[-1]
    if _is_plain_message(leaf) or (leaf.message_type is not None and leaf.message_type.GetOptions().map_entry):
        raise invalid_argument(f"{key!r} is a message; set its fields with dotted names")
    if leaf.is_repeated:
        node[leaf.name] = [_scalar(leaf, v, key) for v in values]
        return
    if len(values) > 1:
        raise invalid_argument(f"{key!r} is not repeated but was given {len(values)} times")
    node[leaf.name] = _scalar(leaf, values[0], key)


def _scalar(field: FieldDescriptor, text: str, key: str) -> Any:
    """A textual value as the JSON value json_format expects for this field."""
    target = field
    if field.message_type is not None and field.message_type.full_name in _WRAPPER_TYPES:
        target = field.message_type.fields_by_name["value"]
    kind = target.type
    try:
        if kind == FieldDescriptor.TYPE_BOOL:
            lowered = text.lower()
            if lowered in ("true", "1"):
                return True
            if lowered in ("false", "0"):
                return False
            raise ValueError(text)
        if kind in INTEGER_TYPES:
            # int() also reads other scripts' digits and thousands of them; JSON numbers do neither.
            if not text.strip().lstrip("-").isascii() or len(text) > 24:
                raise ValueError(text)
            return int(text)
        if kind in FLOAT_TYPES:
            if len(text) > 64:
                raise ValueError(text)
            return float(text)
    except ValueError as exc:
        raise invalid_argument(f"{key!r}: invalid value {text!r}") from exc
    if kind == FieldDescriptor.TYPE_ENUM:
        if text.lstrip("-").isascii() and text.lstrip("-").isdigit() and len(text) < 12:
            return int(text)
        if text not in target.enum_type.values_by_name:
            return full_enum_name(target.enum_type, text) or text
    return text


def response_json(message: Message, response_body: str, *, emit_unpopulated: bool) -> Any:
    """The JSON value of a response message, or of its `response_body` field."""
    options = {
        "preserving_proto_field_name": True,
        "always_print_fields_with_no_presence": emit_unpopulated,
    }
    if not response_body:
        return json_format.MessageToDict(message, **options)
    target: Any = message
    fields = _resolve(message.DESCRIPTOR, response_body.split("."), response_body)
    for field in fields[:-1]:
        target = getattr(target, field.name)
    leaf = fields[-1]
    if leaf.message_type is not None and not leaf.is_repeated:
        return json_format.MessageToDict(getattr(target, leaf.name), **options)
    whole = json_format.MessageToDict(target, **{**options, "always_print_fields_with_no_presence": True})
    return whole.get(leaf.name)
