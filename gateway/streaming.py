"""Server-streaming RPCs over HTTP: Server-Sent Events or newline-delimited JSON, by `Accept`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2
from starlette.types import Receive, Scope, Send

from gateway.errors import GatewayError, status_from_rpc_error, status_to_json

SSE_MEDIA_TYPE = "text/event-stream"
NDJSON_MEDIA_TYPE = "application/x-ndjson"
# A streamed message with this integer field numbers its events: over SSE it becomes the
# event's `id:`, and a request with this field takes the browser's `Last-Event-ID` as
# where to resume (agent runs: ChatEvent.seq, StreamRunRequest.after_seq).
EVENT_ID_FIELD = "seq"
RESUME_FIELD = "after_seq"


def wants_sse(accept: str | None) -> bool:
    return SSE_MEDIA_TYPE in (accept or "").lower()


def _dumps(value: Any) -> str:
    # Compact, and json.dumps escapes newlines, so one message is always one SSE `data:` line.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def event_id(message: Message) -> str | None:
    """The SSE id of a streamed message: its `seq` field when it has a non-zero one."""
    field = message.DESCRIPTOR.fields_by_name.get(EVENT_ID_FIELD)
    if field is None:
        return None
    value = getattr(message, EVENT_ID_FIELD)
    return str(value) if isinstance(value, int) and value > 0 else None


def apply_last_event_id(message: Message, header: str | None) -> None:
    """`Last-Event-ID: N` resumes a stream after event N, unless the request says where."""
    if header is None or message.DESCRIPTOR.fields_by_name.get(RESUME_FIELD) is None:
        return
    if getattr(message, RESUME_FIELD):
        return
    value = header.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 10 or int(value) > 2**31 - 1:
        raise GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "Last-Event-ID must be the id (a whole number) of the last event received",
            reason="LAST_EVENT_ID_INVALID",
        )
    setattr(message, RESUME_FIELD, int(value))


class StreamFormat(Protocol):
    media_type: str
    heartbeat: bytes | None

    def message(self, value: Any, event_id: str | None = None) -> bytes: ...

    def error(self, status: status_pb2.Status) -> bytes: ...


class ServerSentEvents:
    media_type = SSE_MEDIA_TYPE
    # A comment line: ignored by EventSource and fetch readers, keeps proxies from timing out.
    heartbeat: bytes | None = b": keep-alive\n\n"

    def message(self, value: Any, event_id: str | None = None) -> bytes:
        # `id:` lets EventSource reconnect with Last-Event-ID by itself.
        prefix = f"id: {event_id}\n" if event_id else ""
        return f"{prefix}data: {_dumps(value)}\n\n".encode()

    def error(self, status: status_pb2.Status) -> bytes:
        return f"event: error\ndata: {_dumps(status_to_json(status))}\n\n".encode()


class NewlineDelimitedJson:
    """grpc-gateway's streaming format: one `{"result": ...}` per line, `{"error": ...}` on failure."""

    media_type = NDJSON_MEDIA_TYPE
    heartbeat: bytes | None = None

    def message(self, value: Any, event_id: str | None = None) -> bytes:
        return f"{_dumps({'result': value})}\n".encode()

    def error(self, status: status_pb2.Status) -> bytes:
        return f"{_dumps({'error': status_to_json(status)})}\n".encode()


class FirstRead:
    """The outcome of waiting briefly for a stream's first message.

    Waiting lets an error the upstream raises at once (bad token, unknown session) answer with its
    real HTTP status instead of a 200 followed by an error event.
    """

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task

    @classmethod
    async def wait(cls, call: grpc.aio.UnaryStreamCall, within: float) -> FirstRead:
        task = asyncio.ensure_future(call.read())
        await asyncio.wait({task}, timeout=within)
        return cls(task)

    def failed_status(self) -> status_pb2.Status | None:
        if not self.task.done() or self.task.cancelled():
            return None
        error = self.task.exception()
        if isinstance(error, grpc.RpcError):
            return status_from_rpc_error(error)
        return None


class UpstreamStreamResponse:
    """An ASGI response that relays a gRPC server stream and cancels it when the client leaves."""

    def __init__(
        self,
        call: grpc.aio.UnaryStreamCall,
        first: FirstRead,
        stream_format: StreamFormat,
        to_json: Callable[[Message], Any],
        heartbeat_interval: float,
        headers: dict[str, str],
    ) -> None:
        self._call = call
        self._pending: asyncio.Task[Any] | None = first.task
        self._format = stream_format
        self._to_json = to_json
        self._heartbeat_interval = heartbeat_interval
        self._headers = headers
        self.status_code = 200

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {
            **self._headers,
            "content-type": f"{self._format.media_type}; charset=utf-8",
            "cache-control": "no-cache",
            # nginx and similar proxies buffer responses unless told not to; tokens must flow now.
            "x-accel-buffering": "no",
        }
        await send(
            {
                "type": "http.response.start",
                "status": self.status_code,
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
            }
        )
        try:
            async with anyio.create_task_group() as group:

                async def watch_disconnect() -> None:
                    while True:
                        event = await receive()
                        if event["type"] == "http.disconnect":
                            self._call.cancel()
                            group.cancel_scope.cancel()
                            return

                async def relay() -> None:
                    await self._relay(send)
                    group.cancel_scope.cancel()

                group.start_soon(watch_disconnect)
                group.start_soon(relay)
        finally:
            if self._pending is not None and not self._pending.done():
                self._pending.cancel()
            if not self._call.done():
                self._call.cancel()

    async def _relay(self, send: Send) -> None:
        heartbeat = self._format.heartbeat
        while True:
            if self._pending is None:
                self._pending = asyncio.ensure_future(self._call.read())
            done, _ = await asyncio.wait({self._pending}, timeout=self._heartbeat_interval if heartbeat else None)
            if not done:
                assert heartbeat is not None
                await send({"type": "http.response.body", "body": heartbeat, "more_body": True})
                continue
            task, self._pending = self._pending, None
            try:
                item = task.result()
            except grpc.RpcError as exc:
                await self._finish(send, self._format.error(status_from_rpc_error(exc)))
                return
            if item is grpc.aio.EOF:
                await self._finish(send, b"")
                return
            chunk = self._format.message(self._to_json(item), event_id(item))
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def _finish(self, send: Send, last: bytes) -> None:
        await send({"type": "http.response.body", "body": last, "more_body": False})
