"""The models a call may use, in order: retries with backoff on transient errors, then
fallback to the next model, skipping models whose circuit is open.

Every `ChatOpenAI` has `max_retries=0`, so this is the only layer that retries, and it
retries only while nothing of the answer has reached the client: a retry after the
first streamed token would send the text twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import openai
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    SystemMessage,
    message_chunk_to_message,
)
from langchain_core.messages.ai import add_ai_message_chunks
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_openai import ChatOpenAI

from runtime.errors import Unavailable
from runtime.llm.circuit_breaker import CircuitBreaker
from runtime.llm.lean_stream import LeanChatCompletions
from runtime.llm.metrics import LLMMetrics, llm_metrics
from runtime.llm.retry import Backoff, EmptyModelStream, MalformedAnswer, error_kind
from runtime.llm_settings import LLMSettings
from runtime.logging import get_logger
from runtime.tracing import llm_span

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = get_logger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class ModelAnswer:
    model: str
    message: AIMessage
    prompt_tokens: int
    completion_tokens: int
    # Calls sent for this answer, over every model tried (1 when the first call answered).
    attempts: int = 1


class LLMUnavailable(Unavailable):
    """No model of the chain could answer; `attempts` calls were made."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message, reason="LLM_UNAVAILABLE")
        self.attempts = attempts


@dataclass
class _Model:
    name: str
    model: ChatOpenAI
    breaker: CircuitBreaker


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


class LLMClient:
    """One `ChatOpenAI` and one circuit breaker per model name, shared by every chain of
    the process: a judge model failing for one metric is skipped for the next one too."""

    def __init__(self, settings: LLMSettings, *, service: str, temperature: float | None = None) -> None:
        self._settings = settings
        self._temperature = temperature
        self._metrics = llm_metrics(service)
        self._models: dict[str, _Model] = {}

    def _model(self, name: str) -> _Model:
        found = self._models.get(name)
        if found is None:
            s = self._settings
            options: dict[str, Any] = {} if self._temperature is None else {"temperature": self._temperature}
            model = ChatOpenAI(
                model=name,
                base_url=s.effective_llm_base_url,
                api_key=s.effective_llm_api_key,
                timeout=s.llm_timeout_s,
                max_retries=0,
                stream_usage=True,
                streaming=True,
                use_responses_api=False,
                **options,
            )
            # Streamed turns skip the SDK's per-request transform and per-chunk models.
            model.async_client = LeanChatCompletions(model.root_async_client)
            breaker = CircuitBreaker(
                name,
                failure_threshold=s.llm_circuit_failure_threshold,
                cooldown_s=s.llm_circuit_cooldown_s,
                gauge=self._metrics.circuit_open,
            )
            found = self._models[name] = _Model(name, model, breaker)
        return found

    def chain(self, models: Sequence[str], *, tool_schemas: Sequence[dict[str, Any]] = ()) -> ModelChain:
        """The chain over `models` in order (the first is the primary, the rest fallbacks)."""
        endpoints = []
        for name in models:
            entry = self._model(name)
            with_tools = entry.model.bind_tools(list(tool_schemas)) if tool_schemas else entry.model
            endpoints.append(ModelEndpoint(name, entry.model, with_tools, entry.breaker))
        s = self._settings
        backoff = Backoff(s.llm_backoff_base_s, s.llm_backoff_max_s, s.llm_retry_after_max_s)
        return ModelChain(endpoints, backoff=backoff, max_attempts=s.llm_max_attempts, metrics=self._metrics)

    def chain_for(self, explicit_model: str) -> ModelChain:
        """A model named for one job (EXTRACTION_MODEL, JUDGE_MODEL, a metric's `model:`) is
        used alone: the operator chose it, and silently answering with another model would
        hide that it is down (and mix judges in one score). Otherwise LLM_MODELS in order."""
        return self.chain([explicit_model] if explicit_model else self._settings.llm_models)


class ModelChain:
    def __init__(
        self, endpoints: list[ModelEndpoint], *, backoff: Backoff, max_attempts: int, metrics: LLMMetrics
    ) -> None:
        self._endpoints = endpoints
        self._backoff = backoff
        self._max_attempts = max_attempts
        self._metrics = metrics

    @classmethod
    def from_settings(
        cls, settings: LLMSettings, tool_schemas: Sequence[dict[str, Any]] = (), *, service: str
    ) -> ModelChain:
        """LLM_MODELS in order, with the tools bound."""
        return LLMClient(settings, service=service).chain(settings.llm_models, tool_schemas=tool_schemas)

    def preferred_model(self) -> str:
        for endpoint in self._endpoints:
            if not endpoint.breaker.is_open:
                return endpoint.name
        return self._endpoints[0].name

    async def complete_json(
        self,
        *,
        name: str,
        schema: dict[str, Any],
        instructions: str,
        document: dict[str, Any],
        parse: Callable[[dict[str, Any]], T] | None = None,
    ) -> tuple[T, ModelAnswer]:
        """A structured answer (`response_format` json_schema `name`) to a JSON document,
        with the same retries, fallback and circuit breakers as a turn. `parse` checks the
        object (raising ValueError when it does not follow the schema); a non-JSON or
        refused answer is retried like a transient failure, then the next model is tried."""
        response_format = {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}
        messages: list[BaseMessage] = [
            SystemMessage(content=instructions),
            HumanMessage(content=json.dumps(document, ensure_ascii=False)),
        ]

        def check(message: AIMessage) -> T:
            try:
                parsed = json.loads(str(message.text))
                if not isinstance(parsed, dict):
                    raise ValueError("the answer is not a JSON object")
                return parse(parsed) if parse is not None else parsed  # type: ignore[return-value]
            except ValueError as exc:
                raise MalformedAnswer(f"malformed {name} answer: {str(exc).splitlines()[0]}") from None

        results: list[T] = []

        def keep(message: AIMessage) -> None:
            results.append(check(message))

        answer = await self.answer(
            messages, with_tools=False, on_text=None, response_format=response_format, check=keep
        )
        return results[-1], answer

    async def answer(
        self,
        messages: list[BaseMessage],
        *,
        with_tools: bool,
        on_text: Callable[[str], None] | None,
        config: RunnableConfig | None = None,
        response_format: dict[str, Any] | None = None,
        check: Callable[[AIMessage], None] | None = None,
    ) -> ModelAnswer:
        failures: list[str] = []
        attempts = [0]
        last = len(self._endpoints) - 1
        for index, endpoint in enumerate(self._endpoints):
            if not endpoint.breaker.allow():
                failures.append(f"{endpoint.name} is failing (next try in {endpoint.breaker.retry_in_s():.0f}s)")
                reason = "circuit_open"
            else:
                try:
                    answer = await self._answer_with(
                        endpoint, messages, with_tools, on_text, config, response_format, check, attempts
                    )
                    return dataclasses.replace(answer, attempts=attempts[0])
                except ModelFailed as exc:
                    failures.append(str(exc))
                    reason = exc.kind
            if index < last:
                self._metrics.fallbacks_total.labels(from_model=endpoint.name, reason=reason).inc()
                log.warning("llm_fallback", from_model=endpoint.name, to_model=self._endpoints[index + 1].name)
        raise LLMUnavailable("no model could answer: " + "; ".join(failures), attempts=attempts[0])

    async def _answer_with(
        self,
        endpoint: ModelEndpoint,
        messages: list[BaseMessage],
        with_tools: bool,
        on_text: Callable[[str], None] | None,
        config: RunnableConfig | None,
        response_format: dict[str, Any] | None,
        check: Callable[[AIMessage], None] | None,
        attempts: list[int],
    ) -> ModelAnswer:
        runnable = endpoint.with_tools if with_tools else endpoint.plain
        if response_format is not None:
            # As a body field, not langchain-openai's `response_format`: that one sends the call
            # down the SDK's `parse()` (request transform, a pydantic model of the answer, its
            # own JSON parse), where `check` parses the JSON anyway. The request is the same.
            runnable = endpoint.plain.bind(extra_body={"response_format": response_format})
        m = self._metrics
        for attempt in range(1, self._max_attempts + 1):
            state = _Attempt()
            started = time.perf_counter()
            attempts[0] += 1
            try:
                answer = await self._stream(endpoint.name, runnable, messages, on_text, config, state, started)
                if check is not None:
                    check(answer.message)
            except asyncio.CancelledError:
                endpoint.breaker.release_probe()
                raise
            except Exception as exc:
                m.request_seconds.labels(model=endpoint.name, outcome="error").observe(time.perf_counter() - started)
                delay = self._next_delay(endpoint, attempt, exc, state)
                m.retries_total.labels(model=endpoint.name, error=error_kind(exc) or "").inc()
                log.info("llm_retry", model=endpoint.name, attempt=attempt, error=type(exc).__name__, delay_s=delay)
                await asyncio.sleep(delay)
                continue
            m.request_seconds.labels(model=endpoint.name, outcome="ok").observe(time.perf_counter() - started)
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

    async def _whole(
        self,
        model: str,
        runnable: Runnable[Any, Any],
        messages: list[BaseMessage],
        config: RunnableConfig | None,
        state: _Attempt,
        started: float,
    ) -> ModelAnswer:
        with llm_span(model) as span:
            message = await runnable.ainvoke(messages, config=config, stream=False)
            if not isinstance(message, AIMessage) or (not message.content and not message.tool_calls):
                raise EmptyModelStream(f"{model} sent an empty answer")
            state.first_output = True
            self._metrics.time_to_first_token_seconds.labels(model=model).observe(time.perf_counter() - started)
            return self._answered(model, message, span)

    def _answered(self, model: str, message: AIMessage, span: Span) -> ModelAnswer:
        usage = message.usage_metadata or {"input_tokens": 0, "output_tokens": 0}
        prompt, completion = usage.get("input_tokens", 0), usage.get("output_tokens", 0)
        span.set_attribute("gen_ai.usage.input_tokens", prompt)
        span.set_attribute("gen_ai.usage.output_tokens", completion)
        self._metrics.tokens_total.labels(model=model, kind="prompt").inc(prompt)
        self._metrics.tokens_total.labels(model=model, kind="completion").inc(completion)
        return ModelAnswer(model, message, prompt, completion)

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
        m = self._metrics
        if on_text is None:
            # Nobody reads this answer as it comes (structured output, summaries): one
            # response costs a fraction of parsing and merging a chunk per token.
            return await self._whole(model, runnable, messages, config, state, started)
        with llm_span(model) as span:
            # Merged once at the end: `merged + chunk` per chunk built a new message (its
            # validation, tool-call parsing, content copied) for every token.
            received: list[AIMessageChunk] = []
            # aclosing: a cancelled turn must close the HTTP stream now, so the server stops generating.
            # Runnable.astream is an async generator (it has aclose) though annotated AsyncIterator.
            stream = cast("AsyncGenerator[Any, None]", runnable.astream(messages, config=config))
            async with aclosing(stream) as chunks:
                async for chunk in chunks:
                    received.append(chunk)
                    text = chunk.text
                    # The first chunk is often only the role: time to first token is the
                    # first text or tool-call fragment.
                    if not state.first_output and (text or chunk.tool_call_chunks):
                        state.first_output = True
                        m.time_to_first_token_seconds.labels(model=model).observe(time.perf_counter() - started)
                    # Text nobody saw yet (no on_text) can be retried whole.
                    if text and on_text is not None:
                        state.sent_text = True
                        on_text(str(text))
            if not received:
                raise EmptyModelStream(f"{model} sent an empty stream")
            message = message_chunk_to_message(add_ai_message_chunks(received[0], *received[1:]))
            assert isinstance(message, AIMessage)
            return self._answered(model, message, span)
