"""Chat completions for langchain-openai without two costs the openai SDK adds.

Profiled in the agent (`make profile`), about a fifth of its CPU per turn went to the SDK
rather than to the turn: before each request it walks the whole request body against its
TypedDict declarations (`async_maybe_transform`: the conversation, message by message), and
for each streamed chunk it builds a pydantic `ChatCompletionChunk` (`construct_type`) that
langchain-openai turns straight back into a dict (`model_dump()`). For chat completions
neither does anything here: langchain-openai builds the body from plain JSON types (no
aliases, no files, no dates for the transform to convert), and it accepts chunks as the
decoded JSON dicts.

`LeanChatCompletions` is the SDK's own `AsyncCompletions` with `create` sending the request
as built and handing over each chunk, or the whole answer, as decoded (`cast_to=object`, the
SDK's own "no model" path; langchain-openai reads a dict answer as it is). Requests, errors
(HTTP statuses, error events in the stream), timeouts, raw-response wrapping and the HTTP
client stay the SDK's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

from openai import AsyncStream
from openai._base_client import make_request_options
from openai.resources.chat.completions import AsyncCompletions

# Keyword arguments of `create` that are request options, not body fields.
REQUEST_OPTIONS = ("extra_headers", "extra_query", "extra_body", "timeout")


class Chunks:
    """The chunks of one streamed completion as dicts, closable like the SDK's stream (a
    cancelled turn closes the HTTP response at once, so the server stops generating)."""

    def __init__(self, stream: AsyncStream[Any]) -> None:
        self._stream = stream

    async def __aenter__(self) -> Chunks:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stream.close()

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[dict[str, Any]]:
        async for chunk in self._stream:
            if not isinstance(chunk, dict):
                continue
            # The SDK's model would have a `delta` on every choice (None when the server
            # left it out); langchain-openai reads it by key.
            for choice in chunk.get("choices") or ():
                if isinstance(choice, dict):
                    choice.setdefault("delta", None)
            yield chunk

    async def close(self) -> None:
        await self._stream.close()


class LeanChatCompletions(AsyncCompletions):
    # Takes what langchain-openai passes (the SDK's overloads by `stream` are its typing).
    async def create(self, **params: Any) -> Any:
        options = {key: params.pop(key) for key in REQUEST_OPTIONS if key in params}
        if not params.get("stream"):
            # langchain-openai calls this through `with_raw_response`, whose header in
            # extra_headers makes `_post` answer the raw response; its parse() gives the dict.
            return await self._post(
                "/chat/completions", body=params, options=make_request_options(**options), cast_to=object
            )
        stream = await self._post(
            "/chat/completions",
            body=params,
            options=make_request_options(**options),
            cast_to=object,
            stream=True,
            stream_cls=AsyncStream[object],
        )
        return Chunks(stream)
