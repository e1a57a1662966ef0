"""A turn's trace cut to what evals takes (runtime.trace_limits) before it is handed off.

Evals refuses a trace over its limits for good, so the outbox would keep it as a dead
letter; one over the message limit would be refused on every retry. Settings allow both
(MAX_TOOL_ROUNDS times MAX_TOOL_CALLS_PER_ROUND calls, answers and tool results of any length).
The conversation itself is the checkpoint, untouched; the trace keeps every field's start
and says what it left out.
"""

from __future__ import annotations

import json

from agentmesh.evals.v1 import evals_pb2
from runtime.trace_limits import MAX_SHORT_FIELD_CHARS, MAX_TEXT_CHARS, MAX_TOOL_CALLS, MAX_TRACE_BYTES

TRIMMED = "\n[trimmed {n} characters]"
# The marker's own length, with room for the count's digits.
MARKER_CHARS = len(TRIMMED.format(n=10**12))


def clipped(text: str, limit: int) -> str:
    """`text` in at most `limit` characters, ending with how much was cut when it was."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - MARKER_CHARS)
    return text[:keep] + TRIMMED.format(n=len(text) - keep)[: limit - keep]


def clipped_json(text: str, limit: int) -> str:
    """Tool arguments in at most `limit` characters and still JSON (evals checks that they
    parse): when cut, an object with their start as a string and how much was left out."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - MARKER_CHARS - 40)
    while True:
        cut = json.dumps({"trimmed_characters": len(text) - keep, "start": text[:keep]}, ensure_ascii=False)
        if len(cut) <= limit or keep == 0:
            return cut
        # Escapes made it longer than the characters kept: keep fewer, in proportion.
        keep = max(0, keep * limit // len(cut) - 1)


def _cut(message: object, name: str, limit: int, text: str | None = None) -> bool:
    """Cuts one text field (or `text`, what it held first) to `limit` characters; True if
    that made it shorter."""
    text = getattr(message, name) if text is None else text
    cut = (clipped_json if name == "arguments_json" else clipped)(text, limit)
    if len(cut) >= len(text):
        return False
    setattr(message, name, cut)
    return True


def _texts(trace: evals_pb2.Trace) -> list[tuple[object, str]]:
    fields: list[tuple[object, str]] = [(trace, "input"), (trace, "output")]
    for call in trace.tool_calls:
        fields += [(call, "result"), (call, "arguments_json")]
    return fields


def fit_trace(trace: evals_pb2.Trace, max_bytes: int = MAX_TRACE_BYTES) -> bool:
    """Cuts `trace` in place to evals' limits and `max_bytes` serialised; True if it cut."""
    changed = len(trace.tool_calls) > MAX_TOOL_CALLS
    del trace.tool_calls[MAX_TOOL_CALLS:]
    # The ids are the agent's own UUIDs; the names come from settings and the model.
    short = [(trace, "model"), *((call, field) for call in trace.tool_calls for field in ("name", "decision"))]
    for message, name in short:
        changed |= _cut(message, name, MAX_SHORT_FIELD_CHARS)
    for message, name in _texts(trace):
        changed |= _cut(message, name, MAX_TEXT_CHARS)
    if trace.ByteSize() > max_bytes:
        _cap_texts(trace, max_bytes)
        changed = True
    return changed


def _cap_texts(trace: evals_pb2.Trace, max_bytes: int) -> None:
    """Cuts the texts to one length, the longest that fits `max_bytes`: the short ones stay
    whole and the long ones share what is left."""
    fields = _texts(trace)
    values = [getattr(message, name) for message, name in fields]
    encoded = [len(value.encode()) for value in values]
    widths = [size / len(value) if value else 1.0 for value, size in zip(values, encoded, strict=True)]
    # What the cut texts may take: the rest of the trace stays, and each cut adds its marker.
    budget = max_bytes - (trace.ByteSize() - sum(encoded)) - len(fields) * (MARKER_CHARS + 64)

    def estimate(cap: int) -> float:
        return sum(min(len(value), cap) * width for value, width in zip(values, widths, strict=True))

    low, high = 0, max(len(value) for value in values)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if estimate(middle) <= budget else (low, middle - 1)
    cap = low
    while True:
        for (message, name), value in zip(fields, values, strict=True):
            if len(value) > cap:
                _cut(message, name, cap, value)
        # Characters of uneven width can make the estimate short: cut further.
        if trace.ByteSize() <= max_bytes or cap == 0:
            return
        cap = cap * 3 // 4
