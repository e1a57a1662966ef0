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
        self._writing = asyncio.Lock()
        self._sent_at = 0.0
        self._finished = False

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
        self._sent_at = asyncio.get_running_loop().time()
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
                if self._format.heartbeat is not None:
                    group.start_soon(self._heartbeats, send, self._format.heartbeat)
        finally:
            if self._pending is not None and not self._pending.done():
                self._pending.cancel()
            if not self._call.done():
                self._call.cancel()

    async def _relay(self, send: Send) -> None:
        # Each read is awaited as it is: a task and a timed wait per message (for the
        # heartbeat) cost three times the read itself; the heartbeat keeps its own time.
        while True:
            try:
                if self._pending is not None:  # the first read, begun by FirstRead
                    pending, self._pending = self._pending, None
                    item = await pending
                else:
                    item = await self._call.read()
            except grpc.RpcError as exc:
                await self._finish(send, self._format.error(status_from_rpc_error(exc)))
                return
            if item is grpc.aio.EOF:
                await self._finish(send, b"")
                return
            await self._send(send, self._format.message(self._to_json(item), event_id(item)))

    async def _heartbeats(self, send: Send, heartbeat: bytes) -> None:
        """A heartbeat whenever nothing was sent for the interval (idle model, paused run)."""
        loop = asyncio.get_running_loop()
        while True:
            quiet_for = loop.time() - self._sent_at
            if quiet_for < self._heartbeat_interval:
                await asyncio.sleep(self._heartbeat_interval - quiet_for)
                continue
            await self._send(send, heartbeat)

    async def _send(self, send: Send, chunk: bytes) -> None:
        # One writer at a time: the relay and the heartbeats share the response, and nothing
        # may follow its last chunk.
        async with self._writing:
            if self._finished:
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        self._sent_at = asyncio.get_running_loop().time()

    async def _finish(self, send: Send, last: bytes) -> None:
        async with self._writing:
            self._finished = True
            await send({"type": "http.response.body", "body": last, "more_body": False})
