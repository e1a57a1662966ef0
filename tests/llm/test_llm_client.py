"""The shared LLM client's pure rules (runtime/llm): backoff with full jitter and
`retry-after`, the circuit breaker, and structured answers retried when malformed and moved
to the next model when they stay malformed. The same client runs in the agent, memory and
evals; tests/agent/test_resilience.py covers it against the offline model over HTTP."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from prometheus_client import REGISTRY

from runtime.llm import Backoff, LLMUnavailable
from runtime.llm.chain import ModelChain, ModelEndpoint
from runtime.llm.circuit_breaker import CircuitBreaker
from runtime.llm.metrics import llm_metrics
from runtime.llm.retry import error_kind, retry_after_s

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def rate_limited(headers: dict[str, str]) -> openai.RateLimitError:
    request = httpx.Request("POST", "http://model/v1/chat/completions")
    response = httpx.Response(429, headers=headers, request=request)
    return openai.RateLimitError("slow down", response=response, body=None)


def test_backoff_is_full_jitter_capped_and_honours_retry_after() -> None:
    backoff = Backoff(base_s=1.0, max_s=4.0, retry_after_max_s=10.0)
    plain = RuntimeError("no headers")
    assert all(0 <= backoff.delay_s(1, plain) <= 1.0 for _ in range(200))  # type: ignore[operator]
    assert all(0 <= backoff.delay_s(10, plain) <= 4.0 for _ in range(200))  # type: ignore[operator]
    assert len({backoff.delay_s(3, plain) for _ in range(50)}) > 1  # jittered, not lockstep
    assert backoff.delay_s(1, rate_limited({"retry-after": "7"})) == 7.0
    assert backoff.delay_s(1, rate_limited({"retry-after-ms": "2500"})) == 2.5
    assert backoff.delay_s(1, rate_limited({"retry-after": "11"})) is None  # longer than we wait: next model
    assert retry_after_s(rate_limited({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"})) is None


def test_error_kinds_say_what_is_worth_retrying() -> None:
    assert error_kind(rate_limited({})) == "429"
    assert error_kind(httpx.ConnectError("refused")) == "connection"
    assert error_kind(ValueError("a bug of ours")) is None


def test_circuit_opens_after_the_threshold_and_lets_one_probe_through_after_the_cooldown() -> None:
    now = [0.0]
    breaker = CircuitBreaker("m", failure_threshold=2, cooldown_s=30, clock=lambda: now[0])
    breaker.record_failure()
    assert breaker.allow() and not breaker.is_open
    breaker.record_failure()
    assert breaker.is_open and not breaker.allow()
    now[0] = 31
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time
    breaker.record_success()
    assert not breaker.is_open and breaker.allow()


def chain_of(*models: tuple[str, list[str]], max_attempts: int = 3) -> ModelChain:
    endpoints = []
    for name, answers in models:
        model = GenericFakeChatModel(messages=iter(AIMessage(content=a) for a in answers))
        breaker = CircuitBreaker(name, failure_threshold=5, cooldown_s=30)
        endpoints.append(ModelEndpoint(name, model, model, breaker))
    return ModelChain(endpoints, backoff=Backoff(0.0, 0.0, 1.0), max_attempts=max_attempts, metrics=llm_metrics("test"))


def parse_n(answer: dict[str, object]) -> int:
    if not isinstance(answer.get("n"), int):
        raise ValueError("n must be an integer")
    return answer["n"]  # type: ignore[return-value]


def retries(model: str) -> float:
    return REGISTRY.get_sample_value("test_llm_retries_total", {"model": model, "error": "invalid_json"}) or 0.0


async def test_a_malformed_structured_answer_is_retried_on_the_same_model() -> None:
    before = retries("judge-a")
    chain = chain_of(("judge-a", ["not json", json.dumps({"n": "seven"}), json.dumps({"n": 7})]))
    value, answer = await chain.complete_json(name="t", schema=SCHEMA, instructions="i", document={}, parse=parse_n)
    assert (value, answer.model, answer.attempts) == (7, "judge-a", 3)
    assert retries("judge-a") - before == 2


async def test_a_model_that_stays_malformed_falls_back_to_the_next_model() -> None:
    chain = chain_of(("bad", ["[1]", "nope"]), ("good", [json.dumps({"n": 1})]), max_attempts=2)
    value, answer = await chain.complete_json(name="t", schema=SCHEMA, instructions="i", document={}, parse=parse_n)
    assert (value, answer.model, answer.attempts) == (1, "good", 3)


async def test_every_model_malformed_is_unavailable_with_the_attempts_made() -> None:
    chain = chain_of(("only", ["x", "y"]), max_attempts=2)
    with pytest.raises(LLMUnavailable) as failure:
        await chain.complete_json(name="t", schema=SCHEMA, instructions="i", document={})
    assert failure.value.attempts == 2 and failure.value.reason == "LLM_UNAVAILABLE"
    assert "invalid_json after 2 attempts" in str(failure.value)
