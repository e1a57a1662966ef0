"""Injected faults, per-request headers and stream disconnects, as a client sees them."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from offline_llm import OfflineLLMSettings, serve_in_process
from tests.support.waiting import eventually

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


async def stats(control: httpx.AsyncClient) -> dict[str, object]:
    return (await control.get("/_offline/stats")).json()


async def test_429_carries_retry_after_until_its_count_is_used(
    openai_client: AsyncOpenAI, control: httpx.AsyncClient
) -> None:
    added = await control.post(
        "/_offline/faults", json={"model": "offline-small", "kind": "429", "count": 2, "retry_after": 3}
    )
    assert added.status_code == 200

    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as raised:
            await openai_client.chat.completions.create(model="offline-small", messages=QUESTION)
        assert raised.value.response.headers["retry-after"] == "3"
        assert raised.value.body["code"] == "rate_limit_exceeded"  # type: ignore[index]
    recovered = await openai_client.chat.completions.create(model="offline-small", messages=QUESTION)

    assert "offline model" in (recovered.choices[0].message.content or "")
    assert (await stats(control))["faults_injected"] == {"429": 2}


async def test_faults_are_per_model_so_a_fallback_model_answers(
    openai_client: AsyncOpenAI, control: httpx.AsyncClient
) -> None:
    await control.post("/_offline/faults", json={"model": "offline-large", "kind": "500"})

    with pytest.raises(openai.InternalServerError) as raised:
        await openai_client.chat.completions.create(model="offline-large", messages=QUESTION)
    fallback = await openai_client.chat.completions.create(model="offline-small", messages=QUESTION)

    assert raised.value.status_code == 500
    assert raised.value.body["type"] == "server_error"  # type: ignore[index]
    assert fallback.choices[0].message.content
    listed = await openai_client.models.list()
    assert "offline-large" in [m.id for m in listed.data]
    counters = await stats(control)
    assert counters["requests_by_model"] == {"offline-large": 1, "offline-small": 1}


async def test_invalid_json_breaks_only_structured_answers(
    openai_client: AsyncOpenAI, control: httpx.AsyncClient
) -> None:
    await control.post("/_offline/faults", json={"model": "*", "kind": "invalid_json", "count": 1})
    response_format = {
        "type": "json_schema",
        "json_schema": {
            "name": "judgement",
            "schema": {"type": "object", "properties": {"score": {"type": "number"}}, "required": ["score"]},
        },
    }
    judged = json.dumps({"metric": "toxicity", "input": "hi", "output": "hello there"})

    plain = await openai_client.chat.completions.create(model="offline-small", messages=QUESTION)
    broken = await openai_client.chat.completions.create(
        model="offline-small", messages=[{"role": "user", "content": judged}], response_format=response_format
    )
    retried = await openai_client.chat.completions.create(
        model="offline-small", messages=[{"role": "user", "content": judged}], response_format=response_format
    )

    assert "offline model" in (plain.choices[0].message.content or "")
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.choices[0].message.content or "")
    assert json.loads(retried.choices[0].message.content or "")["score"] == 0.0


async def test_header_fault_and_stall_make_the_client_time_out(
    openai_client: AsyncOpenAI, control: httpx.AsyncClient
) -> None:
    with pytest.raises(openai.RateLimitError):
        await openai_client.chat.completions.create(
            model="offline-small", messages=QUESTION, extra_headers={"x-offline-fault": "429"}
        )
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await openai_client.chat.completions.create(
            model="offline-small",
            messages=QUESTION,
            extra_headers={"x-offline-fault": "stall", "x-offline-stall-s": "5"},
            timeout=0.5,
        )

    assert time.monotonic() - started < 3
    assert (await stats(control))["faults_injected"] == {"429": 1, "stall": 1}


async def test_stall_after_tokens_stops_a_stream_midway(openai_client: AsyncOpenAI, control: httpx.AsyncClient) -> None:
    await control.post(
        "/_offline/faults",
        json={"model": "offline-small", "kind": "stall", "stall_s": 5, "after_tokens": 3, "count": 1},
    )
    received: list[str] = []

    async def read() -> None:
        stream = await openai_client.chat.completions.create(model="offline-small", messages=QUESTION, stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(read(), 1.0)

    assert len(received) == 3


async def test_client_disconnect_mid_stream_is_counted_and_stops_generation(
    base_url: str, control: httpx.AsyncClient
) -> None:
    body = {"model": "offline-small", "messages": QUESTION, "stream": True}
    headers = {"x-offline-tokens-per-s": "20"}
    async with (
        httpx.AsyncClient(timeout=10) as client,
        client.stream("POST", f"{base_url}/chat/completions", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        events = 0
        async for line in response.aiter_lines():
            events += line.startswith("data: ")
            if events == 3:
                break

    async def disconnected() -> dict:
        counters = await stats(control)
        assert counters["client_disconnects"], "the server has not noticed the disconnect yet"
        return counters

    counters = await eventually(disconnected, timeout_s=2.5)
    assert counters["client_disconnects"] == 1
    assert counters["streams_started"] == 1
    assert counters["streams_completed"] == 0


async def test_pacing_spreads_tokens_over_time(openai_client: AsyncOpenAI) -> None:
    started = time.monotonic()
    stream = await openai_client.chat.completions.create(
        model="offline-small",
        messages=QUESTION,
        stream=True,
        extra_headers={"x-offline-ttft-ms": "200", "x-offline-tokens-per-s": "100"},
    )
    arrivals = [
        time.monotonic() - started async for chunk in stream if chunk.choices and chunk.choices[0].delta.content
    ]

    assert arrivals[0] >= 0.2
    assert arrivals[-1] - arrivals[0] >= (len(arrivals) - 1) / 100 * 0.9


async def test_startup_fault_setting_applies_to_its_model() -> None:
    settings = OfflineLLMSettings(port=0, faults="offline-small=429:retry_after=2:count=1;offline-large=500")
    async with serve_in_process(settings) as running:
        client = AsyncOpenAI(base_url=running.base_url, api_key="offline", max_retries=0, timeout=10)
        with pytest.raises(openai.RateLimitError) as limited:
            await client.chat.completions.create(model="offline-small", messages=QUESTION)
        answered = await client.chat.completions.create(model="offline-small", messages=QUESTION)
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="offline-large", messages=QUESTION)
        await client.close()

    assert limited.value.response.headers["retry-after"] == "2"
    assert answered.choices[0].message.content


def test_malformed_fault_setting_is_refused() -> None:
    with pytest.raises(ValueError, match="fault kind"):
        OfflineLLMSettings(faults="offline-small=418")
