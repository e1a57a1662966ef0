"""Parallel tool calls of the offline model: one calculator call per ";"-separated
expression, whole and streamed, and one sentence per result afterwards."""

from __future__ import annotations

import httpx
import openai

from offline_llm.app import create_app

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "calculator",
            "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
        },
    }
]
ASK = [{"role": "user", "content": "what is 1+1; 2+3; 4+4?"}]


def client() -> openai.AsyncOpenAI:
    transport = httpx.ASGITransport(app=create_app())
    return openai.AsyncOpenAI(
        base_url="http://offline/v1", api_key="x", http_client=httpx.AsyncClient(transport=transport)
    )


async def test_parallel_calls_whole_and_streamed() -> None:
    llm = client()
    whole = await llm.chat.completions.create(model="offline-small", messages=ASK, tools=TOOLS)
    streamed: dict[int, dict[str, str]] = {}
    async for chunk in await llm.chat.completions.create(model="offline-small", messages=ASK, tools=TOOLS, stream=True):
        for call in chunk.choices[0].delta.tool_calls or []:
            entry = streamed.setdefault(call.index, {"id": "", "arguments": ""})
            entry["id"] = call.id or entry["id"]
            entry["arguments"] += (call.function.arguments or "") if call.function else ""
    await llm.close()

    calls = whole.choices[0].message.tool_calls or []
    expected = ['{"expression": "1+1"}', '{"expression": "2+3"}', '{"expression": "4+4"}']
    assert [c.function.arguments for c in calls] == expected
    assert len({c.id for c in calls}) == 3
    assert [streamed[i]["arguments"] for i in sorted(streamed)] == expected
    assert whole.choices[0].finish_reason == "tool_calls"


async def test_one_sentence_per_result_after_parallel_calls() -> None:
    llm = client()
    calls = [{"id": name, "type": "function", "function": {"name": "calculator", "arguments": "{}"}} for name in "ab"]
    messages = [
        *ASK,
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "a", "content": "2"},
        {"role": "tool", "tool_call_id": "b", "content": "5"},
    ]
    reply = await llm.chat.completions.create(model="offline-small", messages=messages, tools=TOOLS)
    await llm.close()
    assert reply.choices[0].message.content == "The result is 2. The result is 5."


async def test_a_single_calculation_is_still_one_call() -> None:
    llm = client()
    reply = await llm.chat.completions.create(
        model="offline-small", messages=[{"role": "user", "content": "what is 12*(3+4)?"}], tools=TOOLS
    )
    await llm.close()
    assert len(reply.choices[0].message.tool_calls or []) == 1
