"""Load the compiled descriptor set and list every RPC that has a `google.api.http` rule."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from google.api import annotations_pb2, http_pb2
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from gateway.routing import PathTemplate
from runtime import rpc_policy

# FileDescriptorProto field numbers used to address comments in source_code_info.
_SERVICE_FIELD = 6
_METHOD_FIELD = 2
_MESSAGE_FIELD = 4
_MESSAGE_FIELD_FIELD = 2
_NESTED_MESSAGE_FIELD = 3
_ENUM_FIELD = 5
_NESTED_ENUM_FIELD = 4
_ENUM_VALUE_FIELD = 2

_HTTP_METHODS = ("get", "put", "post", "delete", "patch")


@dataclass(frozen=True)
class HttpBinding:
    """One HTTP verb + path template of one RPC (a rule or one of its additional_bindings)."""

    method: descriptor.MethodDescriptor
    http_method: str
    template: PathTemplate
    body: str
    response_body: str
    request_class: type[Message]
    response_class: type[Message]

    @property
    def service_name(self) -> str:
        return self.method.containing_service.full_name

    @property
    def rpc_name(self) -> str:
        return f"{self.service_name}.{self.method.name}"

    @property
    def grpc_path(self) -> str:
        return f"/{self.service_name}/{self.method.name}"

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    @property
    def client_streaming(self) -> bool:
        return bool(self.method.client_streaming)

    @property
    def public(self) -> bool:
        """Callable without an access token (the contract's `public` option)."""
        return rpc_policy.is_public(self.method)


@dataclass
class ApiDescriptors:
    """The descriptor pool built from the descriptor set, its HTTP bindings and proto comments."""

    pool: descriptor_pool.DescriptorPool
    bindings: list[HttpBinding]
    comments: dict[str, str] = field(default_factory=dict)
    services: list[descriptor.ServiceDescriptor] = field(default_factory=list)

    def comment(self, full_name: str) -> str:
        return self.comments.get(full_name, "")

    def message_class(self, full_name: str) -> type[Message]:
        return message_factory.GetMessageClass(self.pool.FindMessageTypeByName(full_name))

    def rate_limit_classes(self) -> dict[str, str]:
        """`package.Service.Method` -> the rate-limit class its contract names; RPCs that name
        none are left out, so the limiter can still put reads (GET) in their own class."""
        classes: dict[str, str] = {}
        for binding in self.bindings:
            named = rpc_policy.declared_rate_limit_class(binding.method)
            if named is not None:
                classes[binding.rpc_name] = named
        return classes


def load_descriptor_set(path: Path) -> ApiDescriptors:
    file_set = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    return build_descriptors(file_set)


def build_descriptors(file_set: descriptor_pb2.FileDescriptorSet) -> ApiDescriptors:
    # A private pool keeps the gateway independent of whichever generated modules happen to be
    # imported in the process: the descriptor set is the only source of truth.
    pool = descriptor_pool.DescriptorPool()
    for file_proto in file_set.file:
        pool.Add(file_proto)

    bindings: list[HttpBinding] = []
    comments: dict[str, str] = {}
    services: list[descriptor.ServiceDescriptor] = []
    for file_proto in file_set.file:
        comments.update(_comments(file_proto))
        for service_proto in file_proto.service:
            prefix = f"{file_proto.package}." if file_proto.package else ""
            service = pool.FindServiceByName(prefix + service_proto.name)
            has_rules = False
            for method_proto in service_proto.method:
                if not method_proto.options.HasExtension(annotations_pb2.http):
                    continue
                has_rules = True
                method = service.methods_by_name[method_proto.name]
                rule = method_proto.options.Extensions[annotations_pb2.http]
                bindings.extend(_bindings(pool, method, rule))
            if has_rules:
                services.append(service)
    return ApiDescriptors(pool=pool, bindings=bindings, comments=comments, services=services)


def _bindings(
    pool: descriptor_pool.DescriptorPool, method: descriptor.MethodDescriptor, rule: http_pb2.HttpRule
) -> Iterator[HttpBinding]:
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    # additional_bindings may not nest further (google/api/http.proto), so one level is all.
    for each in (rule, *rule.additional_bindings):
        pattern = each.WhichOneof("pattern")
        if pattern is None:
            continue
        if pattern == "custom":
            http_method, path = each.custom.kind.upper(), each.custom.path
        else:
            http_method, path = pattern.upper(), getattr(each, pattern)
        template = PathTemplate.parse(path)
        _check_fields(method.input_type, template, each.body)
        yield HttpBinding(
            method=method,
            http_method=http_method,
            template=template,
            body=each.body,
            response_body=each.response_body,
            request_class=request_class,
            response_class=response_class,
        )


def _check_fields(message: descriptor.Descriptor, template: PathTemplate, body: str) -> None:
    """Fail at start-up, not on the first request, when a rule names a field that does not exist."""
    for variable in template.variables:
        resolve_field_path(message, variable.field_path)
    if body and body != "*":
        resolve_field_path(message, body)


def resolve_field_path(message: descriptor.Descriptor, dotted: str) -> list[descriptor.FieldDescriptor]:
    fields: list[descriptor.FieldDescriptor] = []
    current: descriptor.Descriptor | None = message
    for name in dotted.split("."):
        if current is None:
            raise ValueError(f"{dotted!r}: {fields[-1].name} is not a message")
        found = current.fields_by_name.get(name)
        if found is None:
            raise ValueError(f"{message.full_name} has no field {dotted!r}")
        fields.append(found)
        current = found.message_type
    return fields


def _comments(file_proto: descriptor_pb2.FileDescriptorProto) -> dict[str, str]:
    """Map full names of services, methods, messages, fields and enums to their leading comments."""
    by_path = {
        tuple(loc.path): loc.leading_comments.strip()
        for loc in file_proto.source_code_info.location
        if loc.leading_comments.strip()
    }
    package = f"{file_proto.package}." if file_proto.package else ""
    out: dict[str, str] = {}

    def add(name: str, path: tuple[int, ...]) -> None:
        text = by_path.get(path)
        if text:
            out[name] = _clean(text)

    for s_index, service in enumerate(file_proto.service):
        service_name = package + service.name
        add(service_name, (_SERVICE_FIELD, s_index))
        for m_index, method in enumerate(service.method):
            add(f"{service_name}.{method.name}", (_SERVICE_FIELD, s_index, _METHOD_FIELD, m_index))

    def walk_message(proto: descriptor_pb2.DescriptorProto, name: str, path: tuple[int, ...]) -> None:
        add(name, path)
        for f_index, field_proto in enumerate(proto.field):
            add(f"{name}.{field_proto.name}", (*path, _MESSAGE_FIELD_FIELD, f_index))
        for n_index, nested in enumerate(proto.nested_type):
            walk_message(nested, f"{name}.{nested.name}", (*path, _NESTED_MESSAGE_FIELD, n_index))
        for e_index, enum in enumerate(proto.enum_type):
            walk_enum(enum, f"{name}.{enum.name}", (*path, _NESTED_ENUM_FIELD, e_index))

    def walk_enum(proto: descriptor_pb2.EnumDescriptorProto, name: str, path: tuple[int, ...]) -> None:
        add(name, path)
        for v_index, value in enumerate(proto.value):
            add(f"{name}.{value.name}", (*path, _ENUM_VALUE_FIELD, v_index))

    for index, message in enumerate(file_proto.message_type):
        walk_message(message, package + message.name, (_MESSAGE_FIELD, index))
    for index, enum in enumerate(file_proto.enum_type):
        walk_enum(enum, package + enum.name, (_ENUM_FIELD, index))
    return out


def _clean(comment: str) -> str:
    # buf lint directives are for tooling, not readers of the API docs.
    lines = [line.strip() for line in comment.splitlines() if not line.strip().startswith("buf:lint")]
    return "\n".join(lines).strip()
