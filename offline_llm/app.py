"""Routes of the offline OpenAI-compatible server.

OpenAI API: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/embeddings`.
Test and operations controls (not OpenAI's): `GET /_offline/stats`, `POST /_offline/reset`,
`POST /_offline/faults`, `POST /_offline/script`.
Per-request headers: `x-offline-fault: 429|500|stall|invalid_json`, `x-offline-ttft-ms`,
`x-offline-tokens-per-s`, `x-offline-stall-s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from offline_llm.answers import answer
from offline_llm.completions import Completion, error_body
from offline_llm.embeddings import embed_text, embed_tokens, encode_base64
from offline_llm.faults import Fault, FaultBook, FaultSpecError, parse_fault_setting
from offline_llm.settings import OfflineLLMSettings
from offline_llm.stats import ScriptBook, ScriptedReply, ServerStats
from offline_llm.streaming import PacedEventStream, Pacing
from offline_llm.structured import structured_answer
from offline_llm.text import count_tokens, message_text

OWNER = "agentmesh-offline"
MODELS_CREATED = 1_735_689_600
INVALID_JSON_TEXT = "Sorry, this is not JSON: the offline model was told to break structured output."
# Embedding batches this large go to a worker thread so they do not hold up streams being paced.
THREAD_EMBEDDING_BATCH = 64


class OfflineLLM:
    """The mutable state of one server: settings, faults, scripted replies and counters."""

    def __init__(self, settings: OfflineLLMSettings) -> None:
        self.settings = settings
        self.faults = FaultBook(parse_fault_setting(settings.faults))
        self.scripts = ScriptBook()
        self.stats = ServerStats()

    def reset(self) -> None:
        self.faults.clear()
        self.scripts.clear()
        self.stats = ServerStats()


def _error(
    status: int, message: str, error_type: str, code: str | None, headers: dict[str, str] | None = None
) -> Response:
    return Response(error_body(message, error_type, code), status, headers, media_type="application/json")


def _bad_request(message: str, param: str | None = None) -> Response:
    return Response(error_body(message, "invalid_request_error", None, param), 400, media_type="application/json")


async def _json_object(request: Request) -> dict[str, Any] | Response:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return _bad_request("The request body is not valid JSON.")
    if not isinstance(body, dict):
        return _bad_request("The request body must be a JSON object.")
    return body


def _header_float(request: Request, name: str, default: float) -> float:
    value = request.headers.get(name)
    if value is None:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        return default


def _request_fault(state: OfflineLLM, request: Request, model: str, structured: bool) -> Fault | None:
    kind = request.headers.get("x-offline-fault")
    if kind:
        return Fault.from_mapping(
            {"model": model, "kind": kind, "count": 1, "stall_s": _header_float(request, "x-offline-stall-s", 30.0)}
        )
    return state.faults.take(model, structured=structured)


def _failure_response(fault: Fault, model: str) -> Response | None:
    if fault.kind == "429":
        retry_after = f"{fault.retry_after:g}"
        return _error(
            429,
            f"Rate limit reached for offline model {model} (injected fault). Please try again in {retry_after}s.",
            "requests",
            "rate_limit_exceeded",
            {"retry-after": retry_after},
        )
    if fault.kind == "500":
        return _error(
            500,
            "The offline model had an error while processing your request (injected fault).",
            "server_error",
            None,
        )
    return None


async def _client_left_within(request: Request, seconds: float) -> bool:
    """Sleep up to `seconds` unless the client hangs up first; True if it did."""
    if seconds <= 0:
        return False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while (await request.receive())["type"] != "http.disconnect":
                pass
            return True
    return False


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    total = 0
    for message in messages:
        total += count_tokens(message_text(message)) + 1
        for call in message.get("tool_calls") or []:
            if isinstance(call, dict):
                total += count_tokens(str((call.get("function") or {}).get("arguments", "")))
    return total


def _decide_completion(
    state: OfflineLLM, body: dict[str, Any], model: str, messages: list[dict[str, Any]], fault: Fault | None
) -> Completion:
    prompt_tokens = _prompt_tokens(messages)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    max_tokens = max_tokens if isinstance(max_tokens, int) else None
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_schema", "json_object"):
        if fault is not None and fault.kind == "invalid_json":
            return Completion.of_text(model, prompt_tokens, INVALID_JSON_TEXT, max_tokens)
        text = structured_answer(response_format, messages, lambda: answer(messages, [], "none").text or "")
        return Completion.of_text(model, prompt_tokens, text, max_tokens)
    reply = answer(messages, body.get("tools") or [], body.get("tool_choice", "auto"))
    if reply.tool_call is not None:
        return Completion.of_tool_call(model, prompt_tokens, reply.tool_call, *reply.more_calls)
    text = state.scripts.take(model) or reply.text or ""
    return Completion.of_text(model, prompt_tokens, text, max_tokens)


async def chat_completions(request: Request) -> Response | PacedEventStream:
    state: OfflineLLM = request.app.state.offline
    body = await _json_object(request)
    if isinstance(body, Response):
        return body
    model = str(body.get("model") or "offline-small")
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        return _bad_request("'messages' must be a list of message objects.", "messages")
    stats = state.stats
    stats.requests_by_endpoint["chat.completions"] += 1
    stats.requests_by_model[model] += 1

    response_format = body.get("response_format")
    structured = isinstance(response_format, dict) and response_format.get("type") != "text"
    try:
        fault = _request_fault(state, request, model, structured)
    except FaultSpecError as error:
        return _bad_request(str(error))
    if fault is not None:
        stats.faults_injected[fault.kind] += 1
        failure = _failure_response(fault, model)
        if failure is not None:
            return failure

    completion = _decide_completion(state, body, model, messages, fault)
    settings = state.settings
    ttft_s = _header_float(request, "x-offline-ttft-ms", settings.ttft_ms) / 1000
    tokens_per_s = _header_float(request, "x-offline-tokens-per-s", settings.tokens_per_s)
    stalled = fault is not None and fault.kind == "stall"
    pacing = Pacing(
        ttft_s=ttft_s,
        token_interval_s=1 / tokens_per_s if tokens_per_s else 0.0,
        stall_s=fault.stall_s if stalled and fault else 0.0,
        stall_after_tokens=fault.after_tokens if stalled and fault else 0,
    )

    if body.get("stream"):
        stats.streams_started += 1
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def completed() -> None:
            stats.streams_completed += 1

        def disconnected() -> None:
            stats.client_disconnects += 1

        opening, tokens, closing = completion.stream_frames(include_usage)
        return PacedEventStream(opening, tokens, closing, pacing, completed, disconnected)

    wait_s = pacing.stall_s + pacing.ttft_s + pacing.token_interval_s * max(0, len(completion.pieces) - 1)
    if await _client_left_within(request, wait_s):
        stats.client_disconnects += 1
    return JSONResponse(completion.as_json())


def _embedding_inputs(raw: Any) -> list[str | list[int]] | None:
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(i, int) for i in raw):
        return [raw]
    if isinstance(raw, list) and raw and all(isinstance(i, str | list) for i in raw):
        return raw
    return None


def _embed_batch(inputs: list[str | list[int]], dim: int, as_base64: bool) -> list[dict[str, Any]]:
    data = []
    for index, item in enumerate(inputs):
        vector = embed_text(item, dim) if isinstance(item, str) else embed_tokens(item, dim)
        embedding: Any = encode_base64(vector) if as_base64 else vector
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return data


async def embeddings(request: Request) -> Response:
    state: OfflineLLM = request.app.state.offline
    body = await _json_object(request)
    if isinstance(body, Response):
        return body
    model = str(body.get("model") or "offline-embedding")
    state.stats.requests_by_endpoint["embeddings"] += 1
    state.stats.requests_by_model[model] += 1
    inputs = _embedding_inputs(body.get("input"))
    if inputs is None:
        return _bad_request("'input' must be a string, a list of strings or token arrays.", "input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        return _bad_request("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    dimensions = body.get("dimensions") or state.settings.embedding_dim
    if not isinstance(dimensions, int) or not 1 <= dimensions <= 8192:
        return _bad_request("'dimensions' must be an integer between 1 and 8192.", "dimensions")

    try:
        fault = _request_fault(state, request, model, structured=False)
    except FaultSpecError as error:
        return _bad_request(str(error))
    if fault is not None:
        state.stats.faults_injected[fault.kind] += 1
        failure = _failure_response(fault, model)
        if failure is not None:
            return failure
        if fault.kind == "stall" and await _client_left_within(request, fault.stall_s):
            state.stats.client_disconnects += 1

    as_base64 = encoding == "base64"
    if len(inputs) >= THREAD_EMBEDDING_BATCH:
        data = await run_in_threadpool(_embed_batch, inputs, dimensions, as_base64)
    else:
        data = _embed_batch(inputs, dimensions, as_base64)
    tokens = sum(count_tokens(i) if isinstance(i, str) else len(i) for i in inputs)
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


async def list_models(request: Request) -> Response:
    state: OfflineLLM = request.app.state.offline
    state.stats.requests_by_endpoint["models"] += 1
    names = list(dict.fromkeys([*state.settings.model_ids(), *state.faults.models()]))
    return JSONResponse(
        {
            "object": "list",
            "data": [{"id": n, "object": "model", "created": MODELS_CREATED, "owned_by": OWNER} for n in names],
        }
    )


async def offline_stats(request: Request) -> Response:
    return JSONResponse(request.app.state.offline.stats.as_json())


async def offline_reset(request: Request) -> Response:
    request.app.state.offline.reset()
    return JSONResponse({"reset": True})


async def offline_faults(request: Request) -> Response:
    body = await _json_object(request)
    if isinstance(body, Response):
        return body
    try:
        fault = Fault.from_mapping(body)
    except FaultSpecError as error:
        return _bad_request(str(error))
    request.app.state.offline.faults.add(fault)
    return JSONResponse({"model": fault.model, "kind": fault.kind, "count": fault.count})


async def offline_script(request: Request) -> Response:
    body = await _json_object(request)
    if isinstance(body, Response):
        return body
    reply, count = body.get("reply"), body.get("count", 1)
    if not isinstance(reply, str) or not reply or not isinstance(count, int) or count == 0 or count < -1:
        return _bad_request("'reply' must be a non-empty string and 'count' -1 or a positive integer.")
    model = str(body.get("model") or "*")
    request.app.state.offline.scripts.add(ScriptedReply(model, reply, count))
    return JSONResponse({"model": model, "count": count})


def create_app(config: OfflineLLMSettings | None = None) -> Starlette:
    app = Starlette(
        routes=[
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/_offline/stats", offline_stats, methods=["GET"]),
            Route("/_offline/reset", offline_reset, methods=["POST"]),
            Route("/_offline/faults", offline_faults, methods=["POST"]),
            Route("/_offline/script", offline_script, methods=["POST"]),
        ]
    )
    app.state.offline = OfflineLLM(config or OfflineLLMSettings())
    return app
