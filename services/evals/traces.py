"""Recording traces: validation, and who may record a trace for whom.

RecordTrace is service-only (the interceptor refuses end users with PERMISSION_DENIED):
a user could otherwise post traces under another user's session, turning that user's
score listing into 403s and skewing the global summaries. The recording service (the
agent) names the user the turn belongs to in `user_id`."""

from __future__ import annotations

import json
from datetime import UTC

from agentmesh.evals.v1 import evals_pb2
from runtime.errors import InvalidArgument
from runtime.ids import parse_id
from runtime.principal import Principal, require_service
from runtime.trace_limits import MAX_BATCH_TRACES, MAX_SHORT_FIELD_CHARS, MAX_TEXT_CHARS, MAX_TOOL_CALLS
from services.evals.store import EvalStore, ToolCallRecord, TraceRecord


def _check_length(name: str, value: str, limit: int) -> None:
    if len(value) > limit:
        raise InvalidArgument(f"{name} must be at most {limit} characters", reason="TRACE_FIELD_TOO_LONG")


def _tool_call(call: evals_pb2.TraceToolCall) -> ToolCallRecord:
    if call.arguments_json:
        try:
            json.loads(call.arguments_json)
        except ValueError:
            raise InvalidArgument("tool_calls.arguments_json must be JSON", reason="TOOL_ARGUMENTS_INVALID") from None
    _check_length("tool_calls.result", call.result, MAX_TEXT_CHARS)
    _check_length("tool_calls.arguments_json", call.arguments_json, MAX_TEXT_CHARS)
    return ToolCallRecord(call.name, call.arguments_json, call.result, call.decision)


def trace_record(trace: evals_pb2.Trace, caller: Principal) -> TraceRecord:
    """The trace to store, recorded by a service for the user the trace names (or for
    the user the service acts on behalf of)."""
    if not caller.is_service:
        require_service()
    # The agent records its run id (a canonical UUID); one spelling per trace, as for every id.
    parse_id(trace.trace_id, "trace_id")
    parse_id(trace.session_id, "session_id", required=False)
    _check_length("input", trace.input, MAX_TEXT_CHARS)
    _check_length("output", trace.output, MAX_TEXT_CHARS)
    for name in ("session_id", "user_id", "model"):
        _check_length(name, getattr(trace, name), MAX_SHORT_FIELD_CHARS)
    if len(trace.tool_calls) > MAX_TOOL_CALLS:
        raise InvalidArgument(f"at most {MAX_TOOL_CALLS} tool calls", reason="TOO_MANY_TOOL_CALLS")
    if trace.latency_ms < 0 or trace.usage.prompt_tokens < 0 or trace.usage.completion_tokens < 0:
        raise InvalidArgument("latency and token counts must not be negative", reason="TRACE_FIELD_INVALID")
    # The trace must say whose turn it was (USER_ID_REQUIRED otherwise).
    user_id = parse_id(trace.user_id or caller.on_behalf_of, "user_id")
    return TraceRecord(
        trace_id=trace.trace_id,
        session_id=trace.session_id,
        user_id=user_id,
        input=trace.input,
        output=trace.output,
        model=trace.model,
        latency_ms=trace.latency_ms,
        prompt_tokens=trace.usage.prompt_tokens,
        completion_tokens=trace.usage.completion_tokens,
        tool_calls=[_tool_call(c) for c in trace.tool_calls],
        created_at=trace.created_at.ToDatetime(tzinfo=UTC) if trace.HasField("created_at") else None,
    )


async def record_trace(store: EvalStore, trace: evals_pb2.Trace, caller: Principal) -> bool:
    return await store.insert_trace(trace_record(trace, caller))


async def record_traces(store: EvalStore, traces: list[evals_pb2.Trace], caller: Principal) -> list[bool]:
    """All of them or none: every trace is checked before any is stored, and an invalid one
    fails the batch naming its index (the caller can then send the others on their own)."""
    if not traces:
        raise InvalidArgument("requests must hold at least one trace", reason="BATCH_EMPTY")
    if len(traces) > MAX_BATCH_TRACES:
        raise InvalidArgument(f"at most {MAX_BATCH_TRACES} traces per batch", reason="BATCH_TOO_LARGE")
    records = []
    for index, trace in enumerate(traces):
        try:
            records.append(trace_record(trace, caller))
        except InvalidArgument as exc:
            raise InvalidArgument(
                f"requests[{index}]: {exc.message}", reason=exc.reason, metadata={"index": str(index)}
            ) from None
    return await store.insert_traces(records)
