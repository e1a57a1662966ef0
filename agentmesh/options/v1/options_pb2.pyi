from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
PUBLIC_FIELD_NUMBER: _ClassVar[int]
public: _descriptor.FieldDescriptor
SERVICE_ONLY_FIELD_NUMBER: _ClassVar[int]
service_only: _descriptor.FieldDescriptor
RATE_LIMIT_CLASS_FIELD_NUMBER: _ClassVar[int]
rate_limit_class: _descriptor.FieldDescriptor
