"""What the shared LLM client puts on the wire, against a recording OpenAI-compatible server on
a real socket: a structured call sends its json_schema `response_format` in an ordinary,
unstreamed chat completion (not down the SDK's parse path) with the API key, and its answer
is read from the decoded JSON; a streamed turn sends `stream` and gets its text in order."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from langchain_core.messages import HumanMessage
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from meshctl.mesh import free_port
from runtime.llm.chain import LLMClient
from runtime.llm_settings import LLMSettings
from tests.support.waiting import eventually

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def completion(content: str) -> dict[str, Any]:
    return {
        "id": "c1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
    body = {"id": "c2", "object": "chat.completion.chunk", "created": 0, "model": "m"}
    body["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return f"data: {json.dumps(body)}\n\n"


@pytest.fixture
async def recording_llm() -> AsyncIterator[tuple[str, list[tuple[dict[str, str], dict[str, Any]]]]]:
    seen: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def chat(request: Request) -> Response:
        body = await request.json()
        seen.append((dict(request.headers), body))
        if not body.get("stream"):
            return JSONResponse(completion(json.dumps({"n": 7})))
        parts = [chunk({"role": "assistant", "content": "Hel"}), chunk({"content": "lo"}), chunk({}, "stop")]
        return StreamingResponse(iter([*parts, "data: [DONE]\n\n"]), media_type="text/event-stream")

    port = free_port()
    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())

    async def started() -> None:
        assert server.started

    await eventually(started, timeout_s=10, interval_s=0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1", seen
    finally:
        server.should_exit = True
        await task


async def test_structured_and_streamed_calls_on_the_wire(
    recording_llm: tuple[str, list[tuple[dict[str, str], dict[str, Any]]]],
) -> None:
    url, seen = recording_llm
    settings = LLMSettings(llm_base_url=url, llm_api_key="sk-test", llm_models=["m"], llm_max_attempts=1)
    chain = LLMClient(settings, service="wire_test").chain(["m"])

    value, answer = await chain.complete_json(name="count", schema=SCHEMA, instructions="count", document={"x": 1})

    assert value == {"n": 7} and answer.model == "m" and answer.completion_tokens == 2
    headers, body = seen[-1]
    assert headers["authorization"] == "Bearer sk-test"
    schema = {"name": "count", "schema": SCHEMA, "strict": True}
    assert body["response_format"] == {"type": "json_schema", "json_schema": schema}
    assert not body.get("stream") and body["model"] == "m"

    pieces: list[str] = []
    streamed = await chain.answer([HumanMessage("hi")], with_tools=False, on_text=pieces.append)
    headers, body = seen[-1]
    assert body["stream"] is True and headers["authorization"] == "Bearer sk-test"
    assert "".join(pieces) == "Hello" == streamed.message.content
