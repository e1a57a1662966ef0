"""Reading our rich errors back in tests: status code, message and ErrorInfo reason."""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class RpcFailure:
    code: grpc.StatusCode
    message: str
    reason: str


def error_reason(exc: grpc.aio.AioRpcError) -> str:
    """The `google.rpc.ErrorInfo` reason the service attached to a failed call ("" if none)."""
    status = rpc_status.from_call(exc)
    for detail in status.details if status else []:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


async def rpc_failure(call: Awaitable[object]) -> RpcFailure:
    """Awaits a call that must fail and returns how it failed."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return RpcFailure(exc.code(), exc.details() or "", error_reason(exc))
    raise AssertionError("the call succeeded but was expected to fail")
