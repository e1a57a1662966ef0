"""A turn's trace is cut to what evals takes before the agent hands it off: a long turn is
recorded trimmed instead of refused (a dead letter) or retried forever (over the message
limit). Evals' own validation is the judge of "takes"."""

from __future__ import annotations

import json
import uuid

from agentmesh.evals.v1 import evals_pb2
from runtime.principal import Principal
from runtime.trace_limits import MAX_TEXT_CHARS, MAX_TOOL_CALLS, MAX_TRACE_BYTES
from services.agent.outbox import trace_record
from services.agent.trace_fit import clipped_json, fit_trace
from services.evals.traces import trace_record as checked_by_evals

AGENT = Principal(user_id="service:agent", service="agent")


def a_trace(**fields: object) -> evals_pb2.Trace:
    return evals_pb2.Trace(
        trace_id=str(uuid.uuid4()),
        session_id=str(uuid.uuid4()),
        user_id=str(uuid.uuid4()),
        model="offline-small",
        **fields,  # type: ignore[arg-type]
    )


def test_a_trace_within_the_limits_is_left_as_it_is() -> None:
    call = evals_pb2.TraceToolCall(name="calculator", arguments_json='{"expression": "2+2"}', result="4")
    trace = a_trace(input="What is 2+2?", output="4", tool_calls=[call])
    before = trace.SerializeToString()

    assert not fit_trace(trace)
    assert trace.SerializeToString() == before


def test_a_turn_past_every_limit_is_recorded_trimmed() -> None:
    # 150 calls (MAX_TOOL_ROUNDS 25 x MAX_TOOL_CALLS_PER_ROUND 8 allows 200), each with a
    # result and arguments over the per-field limit, in 3-byte characters: megabytes.
    big = "語" * (MAX_TEXT_CHARS + 5_000)
    calls = [
        evals_pb2.TraceToolCall(
            name="web_search", arguments_json=json.dumps({"query": big}, ensure_ascii=False), result=big
        )
        for _ in range(150)
    ]
    trace = a_trace(input="search a lot", output="answer " + big, tool_calls=calls)
    assert trace.ByteSize() > 50 * MAX_TRACE_BYTES

    assert fit_trace(trace)

    assert len(trace.tool_calls) == MAX_TOOL_CALLS
    assert trace.ByteSize() <= MAX_TRACE_BYTES
    checked_by_evals(trace, AGENT)  # raises InvalidArgument for anything evals would refuse
    assert trace.output.startswith("answer 語語")
    assert "trimmed" in trace.output
    for call in trace.tool_calls:
        assert json.loads(call.arguments_json)["trimmed_characters"] > 0


def test_the_outbox_item_is_the_fitted_trace() -> None:
    trace = a_trace(input="q", output="x" * (MAX_TEXT_CHARS * 2))
    item = trace_record(trace)
    stored = evals_pb2.RecordTraceRequest.FromString(item.payload).trace

    assert len(stored.output) <= MAX_TEXT_CHARS
    checked_by_evals(stored, AGENT)


def test_arguments_full_of_escapes_stay_json_within_the_limit() -> None:
    arguments = json.dumps({"text": '"\\' * 40_000})

    cut = clipped_json(arguments, 1_000)

    assert len(cut) <= 1_000
    assert json.loads(cut)["start"].startswith('{"text"')
