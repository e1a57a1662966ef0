"""Chat completions through the real openai and langchain-openai clients."""

from __future__ import annotations

import json

import httpx
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI


def chat_model(base_url: str, **kwargs: object) -> ChatOpenAI:
    return ChatOpenAI(model="offline-small", base_url=base_url, api_key="offline", max_retries=0, timeout=10, **kwargs)


async def test_models_are_labelled_offline(openai_client: AsyncOpenAI) -> None:
    models = await openai_client.models.list()

    ids = [m.id for m in models.data]
    assert "offline-small" in ids and "offline-large" in ids
    assert {m.owned_by for m in models.data} == {"agentmesh-offline"}


async def test_stream_concatenates_to_the_non_streamed_answer(openai_client: AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    whole = await openai_client.chat.completions.create(model="offline-small", messages=messages)
    stream = await openai_client.chat.completions.create(model="offline-small", messages=messages, stream=True)
    chunks = [chunk async for chunk in stream]

    text = whole.choices[0].message.content or ""
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "offline model" in text
    assert "capital of France" in text
    assert len(pieces) >= 5
    assert "".join(pieces) == text
    assert whole.choices[0].finish_reason == "stop"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert whole.usage is not None and whole.usage.completion_tokens == len(pieces)


async def test_include_usage_adds_a_final_usage_only_chunk(openai_client: AsyncOpenAI) -> None:
    stream = await openai_client.chat.completions.create(
        model="offline-small",
        messages=[{"role": "user", "content": "Tell me a fact about rivers"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + chunks[-1].usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


async def test_langchain_stream_usage_reports_usage_metadata(base_url: str, control: httpx.AsyncClient) -> None:
    model = chat_model(base_url, stream_usage=True)

    merged = None
    async for chunk in model.astream([HumanMessage("Describe the ocean in a few words")]):
        merged = chunk if merged is None else merged + chunk

    assert merged is not None and merged.usage_metadata is not None
    assert merged.usage_metadata["output_tokens"] == len(str(merged.content).split())
    assert merged.usage_metadata["input_tokens"] > 0


async def test_answers_from_the_conversation_and_the_known_facts(openai_client: AsyncOpenAI) -> None:
    system = (
        "You are helpful.\n\n# What you know about the user\n* Loves hiking\n- Lives in Berlin\n\n# Rules\n* be kind"
    )
    history = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Hi, my name is Ana."},
        {"role": "assistant", "content": "Nice to meet you."},
    ]

    async def ask(question: str) -> str:
        messages = [*history, {"role": "user", "content": question}]
        response = await openai_client.chat.completions.create(model="offline-small", messages=messages)
        return response.choices[0].message.content or ""

    assert "your name is Ana" in await ask("What is my name?")
    liked = await ask("What do I like?")
    assert "hiking" in liked and "be kind" not in liked
    assert "Berlin" in await ask("Where do I live?")


async def test_calculator_tool_round_trip_with_bind_tools(base_url: str, control: httpx.AsyncClient) -> None:
    @tool
    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression."""
        return str(eval(expression, {"__builtins__": {}}))  # noqa: S307 - test-only, fixed input

    model = chat_model(base_url).bind_tools([calculator])
    question = HumanMessage("What is 12*(3+4)?")

    first = await model.ainvoke([question])
    assert isinstance(first, AIMessage)
    assert first.tool_calls[0]["name"] == "calculator"
    assert first.tool_calls[0]["args"] == {"expression": "12*(3+4)"}

    result = ToolMessage(calculator.invoke(first.tool_calls[0]["args"]), tool_call_id=first.tool_calls[0]["id"])
    second = await model.ainvoke([question, first, result])
    assert second.content == "The result is 84."
    assert not second.tool_calls


async def test_streamed_tool_call_matches_openai_delta_shape(openai_client: AsyncOpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "web_search",
                "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
            },
        }
    ]
    stream = await openai_client.chat.completions.create(
        model="offline-large",
        messages=[{"role": "user", "content": "Search the web for the tallest mountain in Spain"}],
        tools=tools,
        stream=True,
    )
    chunks = [chunk async for chunk in stream]

    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert calls[0].id and calls[0].type == "function" and calls[0].function.name == "web_search"
    assert {tc.index for tc in calls} == {0}
    arguments = "".join(tc.function.arguments or "" for tc in calls)
    assert json.loads(arguments) == {"query": "the tallest mountain in Spain"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_time_question_calls_current_time_and_tool_none_answers_in_words(openai_client: AsyncOpenAI) -> None:
    tools = [{"type": "function", "function": {"name": "current_time", "parameters": {"type": "object"}}}]
    messages = [{"role": "user", "content": "What time is it?"}]

    called = await openai_client.chat.completions.create(model="offline-small", messages=messages, tools=tools)
    declined = await openai_client.chat.completions.create(
        model="offline-small", messages=messages, tools=tools, tool_choice="none"
    )

    assert called.choices[0].finish_reason == "tool_calls"
    assert called.choices[0].message.tool_calls[0].function.name == "current_time"
    assert called.choices[0].message.tool_calls[0].function.arguments == "{}"
    assert declined.choices[0].message.tool_calls is None
    assert "offline model" in (declined.choices[0].message.content or "")


async def test_scripted_reply_is_used_for_the_next_answers_only(
    openai_client: AsyncOpenAI, control: httpx.AsyncClient
) -> None:
    scripted = await control.post(
        "/_offline/script", json={"model": "offline-small", "reply": "You are a stupid idiot.", "count": 1}
    )
    assert scripted.status_code == 200
    messages = [{"role": "user", "content": "Say something"}]

    first = await openai_client.chat.completions.create(model="offline-small", messages=messages)
    second = await openai_client.chat.completions.create(model="offline-small", messages=messages)

    assert first.choices[0].message.content == "You are a stupid idiot."
    assert second.choices[0].message.content != "You are a stupid idiot."
    assert "stupid" not in (second.choices[0].message.content or "")


async def test_invalid_request_body_gets_an_openai_error(control: httpx.AsyncClient) -> None:
    response = await control.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"
