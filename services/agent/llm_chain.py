"""The models a turn may use, in order: retries with backoff on transient errors, then
fallback to the next model, skipping models whose circuit is open.

Every `ChatOpenAI` has `max_retries=0`, so this is the only layer that retries, and it
retries only while nothing of the answer has reached the client: a retry after the
first streamed token would send the text twice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import openai
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    message_chunk_to_message,
)
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_openai import ChatOpenAI

from services.agent import metrics
from services.agent.circuit_breaker import CircuitBreaker
from services.agent.retry_policy import Backoff, EmptyModelStream, error_kind
from services.agent.settings import AgentSettings
from services.common.errors import Unavailable
from services.common.logging import get_logger
from services.common.tracing import llm_span

log = get_logger(__name__)


@dataclass(frozen=True)
class ModelAnswer:
    model: str
    message: AIMessage
    prompt_tokens: int
    completion_tokens: int


@dataclass
class ModelEndpoint:
    name: str
    plain: Runnable[Any, Any]
    with_tools: Runnable[Any, Any]
    breaker: CircuitBreaker


class ModelFailed(Exception):
    """One model gave up for this call (after its retries); the chain moves on."""

    def __init__(self, model: str, kind: str, detail: str) -> None:
        super().__init__(f"{model}: {detail}")
        self.kind = kind


@dataclass
class _Attempt:
    sent_text: bool = False
    first_output: bool = False


class ModelChain:
    def __init__(self, endpoints: list[ModelEndpoint], *, backoff: Backoff, max_attempts: int) -> None:
        self._endpoints = endpoints
        self._backoff = backoff
        self._max_attempts = max_attempts

    @classmethod
    def from_settings(cls, settings: AgentSettings, tool_schemas: Sequence[dict[str, Any]]) -> ModelChain:
        endpoints = []
        for name in settings.llm_models:
            model = ChatOpenAI(
                model=name,
                base_url=settings.effective_llm_base_url,
                api_key=settings.effective_llm_api_key,  # type: ignore[arg-type]
                timeout=settings.llm_timeout_s,
                max_retries=0,
                stream_usage=True,
                streaming=True,
                use_responses_api=False,
            )
            breaker = CircuitBreaker(
                name,
                failure_threshold=settings.llm_circuit_failure_threshold,
                cooldown_s=settings.llm_circuit_cooldown_s,
            )
            with_tools = model.bind_tools(list(tool_schemas)) if tool_schemas else model
            endpoints.append(ModelEndpoint(name, model, with_tools, breaker))
        backoff = Backoff(settings.llm_backoff_base_s, settings.llm_backoff_max_s, settings.llm_retry_after_max_s)
        return cls(endpoints, backoff=backoff, max_attempts=settings.llm_max_attempts)

    def preferred_model(self) -> str:
        for endpoint in self._endpoints:
            if not endpoint.breaker.is_open:
                return endpoint.name
        return self._endpoints[0].name

    async def complete_json(
        self, *, name: str, schema: dict[str, Any], instructions: str, document: dict[str, Any]
    ) -> tuple[dict[str, Any], ModelAnswer]:
        """A structured answer (`response_format` json_schema `name`) to a JSON document,
        with the same retries, fallback and circuit breakers as a turn."""
        response_format = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
        messages: list[BaseMessage] = [SystemMessage(content=instructions), HumanMessage(content=json.dumps(document))]
        answer = await self.answer(messages, with_tools=False, on_text=None, response_format=response_format)
        try:
            parsed = json.loads(str(answer.message.text))
        except ValueError:
            raise Unavailable(f"{answer.model} answered {name} with invalid JSON", reason="LLM_INVALID_JSON") from None
        if not isinstance(parsed, dict):
            raise Unavailable(f"{answer.model} answered {name} with a non-object", reason="LLM_INVALID_JSON")
        return parsed, answer

    async def answer(
        self,
        messages: list[BaseMessage],
        *,
        with_tools: bool,
        on_text: Callable[[str], None] | None,
        config: RunnableConfig | None = None,
        response_format: dict[str, Any] | None = None,
    ) -> ModelAnswer:
        failures: list[str] = []
        last = len(self._endpoints) - 1
        for index, endpoint in enumerate(self._endpoints):
            if not endpoint.breaker.allow():
                failures.append(f"{endpoint.name} is failing (next try in {endpoint.breaker.retry_in_s():.0f}s)")
                reason = "circuit_open"
            else:
                try:
                    return await self._answer_with(endpoint, messages, with_tools, on_text, config, response_format)
                except ModelFailed as exc:
                    failures.append(str(exc))
                    reason = exc.kind
            if index < last:
                metrics.llm_fallbacks_total.labels(from_model=endpoint.name, reason=reason).inc()
                log.warning("llm_fallback", from_model=endpoint.name, to_model=self._endpoints[index + 1].name)
        raise Unavailable("no model could answer: " + "; ".join(failures), reason="LLM_UNAVAILABLE")

    async def _answer_with(
        self,
        endpoint: ModelEndpoint,
        messages: list[BaseMessage],
        with_tools: bool,
        on_text: Callable[[str], None] | None,
        config: RunnableConfig | None,
        response_format: dict[str, Any] | None = None,
    ) -> ModelAnswer:
        runnable = endpoint.with_tools if with_tools else endpoint.plain
        if response_format is not None:
            runnable = endpoint.plain.bind(response_format=response_format)
        for attempt in range(1, self._max_attempts + 1):
            state = _Attempt()
            started = time.perf_counter()
            try:
                answer = await self._stream(endpoint.name, runnable, messages, on_text, config, state, started)
            except asyncio.CancelledError:
                endpoint.breaker.release_probe()
                raise
            except Exception as exc:
                metrics.llm_request_seconds.labels(model=endpoint.name, outcome="error").observe(
                    time.perf_counter() - started
                )
                delay = self._next_delay(endpoint, attempt, exc, state)
                metrics.llm_retries_total.labels(model=endpoint.name, error=error_kind(exc) or "").inc()
                log.info("llm_retry", model=endpoint.name, attempt=attempt, error=type(exc).__name__, delay_s=delay)
                await asyncio.sleep(delay)
                continue
            metrics.llm_request_seconds.labels(model=endpoint.name, outcome="ok").observe(time.perf_counter() - started)
            endpoint.breaker.record_success()
            return answer
        raise AssertionError("unreachable: the last attempt raises or returns")

    def _next_delay(self, endpoint: ModelEndpoint, attempt: int, exc: Exception, state: _Attempt) -> float:
        """Seconds to wait before retrying, or raises to stop trying this model."""
        kind = error_kind(exc)
        if state.sent_text:
            endpoint.breaker.record_failure()
            raise Unavailable(
                "the model stopped in the middle of its answer; please try again", reason="LLM_STREAM_BROKEN"
            ) from exc
        if kind is None:
            endpoint.breaker.release_probe()
            if isinstance(exc, openai.APIStatusError):
                raise ModelFailed(endpoint.name, "rejected", f"refused the request (HTTP {exc.status_code})") from exc
            raise exc  # not a model failure: a bug of ours, reported as INTERNAL
        if attempt >= self._max_attempts:
            endpoint.breaker.record_failure()
            raise ModelFailed(endpoint.name, kind, f"{kind} after {attempt} attempts") from exc
        delay = self._backoff.delay_s(attempt, exc)
        if delay is None:
            endpoint.breaker.record_failure()
            raise ModelFailed(endpoint.name, kind, f"{kind}, asked to wait longer than we retry") from exc
        return delay

    async def _stream(
        self,
        model: str,
        runnable: Runnable[Any, Any],
        messages: list[BaseMessage],
        on_text: Callable[[str], None] | None,
        config: RunnableConfig | None,
        state: _Attempt,
        started: float,
    ) -> ModelAnswer:
        with llm_span(model) as span:
            merged: AIMessageChunk | None = None
            # aclosing: a cancelled turn must close the HTTP stream now, so the server stops generating.
            async with aclosing(runnable.astream(messages, config=config)) as chunks:
                async for chunk in chunks:
                    merged = chunk if merged is None else merged + chunk
                    text = chunk.text
                    # The first chunk is often only the role: time to first token is the
                    # first text or tool-call fragment.
                    if not state.first_output and (text or chunk.tool_call_chunks):
                        state.first_output = True
                        ttft = time.perf_counter() - started
                        metrics.llm_time_to_first_token_seconds.labels(model=model).observe(ttft)
                    # Text nobody saw yet (no on_text) can be retried whole.
                    if text and on_text is not None:
                        state.sent_text = True
                        on_text(str(text))
            if merged is None:
                raise EmptyModelStream(f"{model} sent an empty stream")
            message = message_chunk_to_message(merged)
            assert isinstance(message, AIMessage)
            usage = message.usage_metadata or {"input_tokens": 0, "output_tokens": 0}
            prompt, completion = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
            span.set_attribute("gen_ai.usage.input_tokens", prompt)
            span.set_attribute("gen_ai.usage.output_tokens", completion)
        metrics.llm_tokens_total.labels(model=model, kind="prompt").inc(prompt)
        metrics.llm_tokens_total.labels(model=model, kind="completion").inc(completion)
        return ModelAnswer(model, message, prompt, completion)
