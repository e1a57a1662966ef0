"""OpenAPI 3.1 generated from the same descriptors and http rules the router uses."""

from __future__ import annotations

from typing import Any

from google.api import field_behavior_pb2
from google.protobuf import descriptor

from gateway.descriptors import ApiDescriptors, HttpBinding, resolve_field_path
from gateway.oauth2 import TOKEN_ENDPOINT_RPCS
from gateway.streaming import NDJSON_MEDIA_TYPE, SSE_MEDIA_TYPE

FieldDescriptor = descriptor.FieldDescriptor

STATUS_SCHEMA = "google.rpc.Status"
_INT64_PATTERN = "^-?[0-9]+$"
_UINT64_PATTERN = "^[0-9]+$"
# How deep query parameters follow nested messages; deeper fields are reachable through a body.
_MAX_QUERY_DEPTH = 3

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0, "maximum": 4294967295},
    # proto3 JSON writes 64-bit integers as strings and reads either form.
    FieldDescriptor.TYPE_INT64: {"type": ["string", "integer"], "format": "int64", "pattern": _INT64_PATTERN},
    FieldDescriptor.TYPE_SINT64: {"type": ["string", "integer"], "format": "int64", "pattern": _INT64_PATTERN},
    FieldDescriptor.TYPE_SFIXED64: {"type": ["string", "integer"], "format": "int64", "pattern": _INT64_PATTERN},
    FieldDescriptor.TYPE_UINT64: {"type": ["string", "integer"], "format": "uint64", "pattern": _UINT64_PATTERN},
    FieldDescriptor.TYPE_FIXED64: {"type": ["string", "integer"], "format": "uint64", "pattern": _UINT64_PATTERN},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}

_WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.Duration": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]{1,9})?s$"},
    "google.protobuf.FieldMask": {"type": "string"},
    "google.protobuf.Empty": {"type": "object", "additionalProperties": False},
    "google.protobuf.Struct": {"type": "object"},
    "google.protobuf.Value": {},
    "google.protobuf.ListValue": {"type": "array"},
    "google.protobuf.Any": {
        "type": "object",
        "properties": {"@type": {"type": "string"}},
        "required": ["@type"],
        "additionalProperties": True,
    },
    "google.protobuf.DoubleValue": {"type": "number"},
    "google.protobuf.FloatValue": {"type": "number"},
    "google.protobuf.Int64Value": _SCALARS[FieldDescriptor.TYPE_INT64],
    "google.protobuf.UInt64Value": _SCALARS[FieldDescriptor.TYPE_UINT64],
    "google.protobuf.Int32Value": {"type": "integer", "format": "int32"},
    "google.protobuf.UInt32Value": _SCALARS[FieldDescriptor.TYPE_UINT32],
    "google.protobuf.BoolValue": {"type": "boolean"},
    "google.protobuf.StringValue": {"type": "string"},
    "google.protobuf.BytesValue": {"type": "string", "contentEncoding": "base64"},
}

_STATUS_COMPONENT = {
    "type": "object",
    "description": "The google.rpc.Status every error answers with; `code` is the gRPC status code.",
    "properties": {
        "code": {"type": "integer", "format": "int32"},
        "message": {"type": "string"},
        "details": {"type": "array", "items": {"$ref": "#/components/schemas/google.protobuf.Any"}},
    },
    "required": ["code", "message", "details"],
}


OAUTH2_ERROR_SCHEMA = "OAuth2Error"
_OAUTH2_ERROR_COMPONENT = {
    "type": "object",
    "description": (
        "RFC 6749 section 5.2: how the token endpoint (Login) answers a form request "
        "(`application/x-www-form-urlencoded`, `grant_type=password`) that fails. JSON requests "
        "get a google.rpc.Status."
    ),
    "properties": {
        "error": {
            "type": "string",
            "enum": [
                "invalid_request",
                "invalid_grant",
                "unsupported_grant_type",
                "unauthorized_client",
                "slow_down",
                "temporarily_unavailable",
                "server_error",
            ],
        },
        "error_description": {"type": "string"},
    },
    "required": ["error", "error_description"],
    "additionalProperties": False,
}


class _SchemaBuilder:
    def __init__(self, api: ApiDescriptors, emit_unpopulated: bool) -> None:
        self.api = api
        self.emit_unpopulated = emit_unpopulated
        self.components: dict[str, Any] = {
            STATUS_SCHEMA: _STATUS_COMPONENT,
            "google.protobuf.Any": _WELL_KNOWN["google.protobuf.Any"],
        }

    def ref(self, message: descriptor.Descriptor) -> dict[str, Any]:
        if message.full_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[message.full_name])
        if message.full_name not in self.components:
            self.components[message.full_name] = {}  # placeholder breaks recursion
            self.components[message.full_name] = self.message_schema(message)
        return {"$ref": f"#/components/schemas/{message.full_name}"}

    def message_schema(self, message: descriptor.Descriptor, exclude: set[str] | None = None) -> dict[str, Any]:
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in message.fields:
            if exclude and field.name in exclude:
                continue
            properties[field.name] = self.field_schema(field)
            behaviors = _behaviors(field)
            if field_behavior_pb2.REQUIRED in behaviors and field_behavior_pb2.OUTPUT_ONLY not in behaviors:
                required.append(field.name)
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        description = self.api.comment(message.full_name)
        if description:
            schema["description"] = description
        if required and self.emit_unpopulated:
            # Standard `required`. The same component describes requests and responses, which is
            # sound only while responses print every field (GATEWAY_EMIT_UNPOPULATED, the default);
            # without that an empty REQUIRED field would be missing from a valid response.
            schema["required"] = required
        return schema

    def field_schema(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            schema: dict[str, Any] = {"type": "object", "additionalProperties": self.single(value_field)}
        elif field.is_repeated:
            schema = {"type": "array", "items": self.single(field)}
        else:
            schema = self.single(field)
        description = self.api.comment(f"{field.containing_type.full_name}.{field.name}")
        behaviors = _behaviors(field)
        if description:
            schema = (
                {**schema, "description": description}
                if "$ref" not in schema
                else {
                    "allOf": [schema],
                    "description": description,
                }
            )
        if field_behavior_pb2.OUTPUT_ONLY in behaviors:
            schema = {**schema, "readOnly": True}
        return schema

    def single(self, field: FieldDescriptor) -> dict[str, Any]:
        if field.type in (FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_GROUP):
            return self.ref(field.message_type)
        if field.type == FieldDescriptor.TYPE_ENUM:
            names = [value.name for value in field.enum_type.values]
            schema: dict[str, Any] = {"type": "string", "enum": names}
            description = self.api.comment(field.enum_type.full_name)
            if description:
                schema["description"] = description
            return schema
        return dict(_SCALARS[field.type])


def _behaviors(field: FieldDescriptor) -> list[int]:
    return list(field.GetOptions().Extensions[field_behavior_pb2.field_behavior])


def build_openapi(api: ApiDescriptors, *, title: str, version: str, emit_unpopulated: bool) -> dict[str, Any]:
    builder = _SchemaBuilder(api, emit_unpopulated)
    paths: dict[str, dict[str, Any]] = {}
    seen_ids: set[str] = set()
    for binding in api.bindings:
        path = binding.template.openapi_path()
        operation = _operation(builder, binding, seen_ids)
        paths.setdefault(path, {})[binding.http_method.lower()] = operation
    tags = [{"name": service.full_name, "description": api.comment(service.full_name)} for service in api.services]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": (
                "HTTP/JSON gateway to the agentmesh gRPC services, generated from the proto "
                "annotations. Errors are google.rpc.Status JSON. Server-streaming RPCs answer "
                "newline-delimited JSON, or Server-Sent Events with `Accept: text/event-stream`. "
                "An operation whose `security` is `[]` needs no token; every other one needs "
                "`Authorization: Bearer <access token>`."
            ),
        },
        "tags": tags,
        "paths": paths,
        "components": {
            "schemas": builder.components,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


def _operation(builder: _SchemaBuilder, binding: HttpBinding, seen_ids: set[str]) -> dict[str, Any]:
    method = binding.method
    base_id = f"{method.containing_service.name}_{method.name}"
    operation_id, extra = base_id, 1
    # additional_bindings share the RPC's name; number them in declaration order.
    while operation_id in seen_ids:
        extra += 1
        operation_id = f"{base_id}_{extra}"
    seen_ids.add(operation_id)
    description = builder.api.comment(binding.rpc_name)
    operation: dict[str, Any] = {
        "operationId": operation_id,
        "tags": [binding.service_name],
        "summary": method.name,
        "description": description,
        "parameters": _path_parameters(builder, binding) + _query_parameters(builder, binding),
        "responses": _responses(builder, binding),
        # From the contract's (agentmesh.options.v1.public) option. `[]` says "no token needed";
        # there is no document-wide default an operation could silently inherit.
        "security": [] if binding.public else [{"bearerAuth": []}],
    }
    if binding.body:
        operation["requestBody"] = _request_body(builder, binding)
    return operation


def _path_parameters(builder: _SchemaBuilder, binding: HttpBinding) -> list[dict[str, Any]]:
    parameters = []
    for variable in binding.template.variables:
        field = resolve_field_path(binding.method.input_type, variable.field_path)[-1]
        schema = builder.single(field)
        if schema.get("type") == "string":
            # A path segment is never empty, and single-segment variables cannot contain '/'.
            multi = variable.end == -1 or variable.end - variable.start > 1
            schema = {**schema, "minLength": 1}
            if not multi:
                schema["pattern"] = "^[^/]+$"
        parameters.append(
            {
                "name": variable.field_path,
                "in": "path",
                "required": True,
                "schema": schema,
                "description": builder.api.comment(f"{field.containing_type.full_name}.{field.name}"),
            }
        )
    return parameters


def _query_parameters(builder: _SchemaBuilder, binding: HttpBinding) -> list[dict[str, Any]]:
    if binding.body == "*":
        return []
    bound = {v.field_path for v in binding.template.variables}
    if binding.body:
        bound.add(binding.body)
    parameters: list[dict[str, Any]] = []

    def walk(message: descriptor.Descriptor, prefix: str, depth: int) -> None:
        for field in message.fields:
            name = prefix + field.name
            if name in bound:
                continue
            is_map = field.message_type is not None and field.message_type.GetOptions().map_entry
            if is_map:
                continue
            if field.type == FieldDescriptor.TYPE_MESSAGE and field.message_type.full_name not in _WELL_KNOWN:
                if not field.is_repeated and depth < _MAX_QUERY_DEPTH:
                    walk(field.message_type, name + ".", depth + 1)
                continue
            schema = builder.field_schema(field)
            schema.pop("readOnly", None)
            description = schema.pop("description", "")
            parameter: dict[str, Any] = {"name": name, "in": "query", "required": False, "schema": schema}
            if description:
                parameter["description"] = description
            if field.is_repeated:
                parameter["style"] = "form"
                parameter["explode"] = True
            parameters.append(parameter)

    walk(binding.method.input_type, "", 0)
    return parameters


def _request_body(builder: _SchemaBuilder, binding: HttpBinding) -> dict[str, Any]:
    path_fields = {v.field_path for v in binding.template.variables}
    if binding.body == "*":
        schema = builder.message_schema(binding.method.input_type, exclude=path_fields)
        content: dict[str, Any] = {"application/json": {"schema": schema}}
        form_schema = {**schema, "properties": _form_properties(schema["properties"])}
        content["application/x-www-form-urlencoded"] = {"schema": form_schema}
    else:
        field = resolve_field_path(binding.method.input_type, binding.body)[-1]
        content = {"application/json": {"schema": builder.field_schema(field)}}
    return {"required": False, "content": content}


def _form_properties(properties: dict[str, Any]) -> dict[str, Any]:
    # A form carries flat text fields; nested messages are sent as JSON instead.
    return {
        name: schema
        for name, schema in properties.items()
        if "$ref" not in schema and "allOf" not in schema and schema.get("type") != "object"
    }


def _responses(builder: _SchemaBuilder, binding: HttpBinding) -> dict[str, Any]:
    output = binding.method.output_type
    if binding.response_body:
        field = resolve_field_path(output, binding.response_body)[-1]
        schema = builder.field_schema(field)
    else:
        schema = builder.ref(output)
    error = {"$ref": f"#/components/schemas/{STATUS_SCHEMA}"}
    if binding.server_streaming:
        line = {
            "type": "object",
            "properties": {"result": schema, "error": error},
            "additionalProperties": False,
        }
        ok = {
            "description": (
                'A stream: one JSON object per line, `{"result": ...}` per message and a final '
                '`{"error": Status}` if the stream fails; with `Accept: text/event-stream`, one SSE '
                "`data:` event per message and `event: error` on failure."
            ),
            "content": {
                NDJSON_MEDIA_TYPE: {"schema": line},
                SSE_MEDIA_TYPE: {"schema": {"type": "string"}},
            },
        }
    else:
        ok = {
            "description": builder.api.comment(output.full_name) or "OK",
            "content": {"application/json": {"schema": schema}},
        }
    error_response = {"description": "A google.rpc.Status", "content": {"application/json": {"schema": error}}}
    if binding.rpc_name in TOKEN_ENDPOINT_RPCS:
        builder.components[OAUTH2_ERROR_SCHEMA] = _OAUTH2_ERROR_COMPONENT
        either = {"oneOf": [error, {"$ref": f"#/components/schemas/{OAUTH2_ERROR_SCHEMA}"}]}
        error_response = {
            "description": "A google.rpc.Status; for a form (OAuth2 password grant) request, an OAuth2 error",
            "content": {"application/json": {"schema": either}},
        }
    return {
        "200": ok,
        "400": {**error_response, "description": "INVALID_ARGUMENT, FAILED_PRECONDITION or OUT_OF_RANGE"},
        "401": {**error_response, "description": "UNAUTHENTICATED: missing or invalid bearer token"},
        "404": {**error_response, "description": "NOT_FOUND"},
        "429": {**error_response, "description": "RESOURCE_EXHAUSTED: rate limited; see Retry-After"},
        "default": error_response,
    }
