"""What a turn's trace may hold: evals refuses more (INVALID_ARGUMENT), and the agent fits
its traces to these before handing them off, so a long turn is recorded trimmed, not lost."""

from __future__ import annotations

MAX_TEXT_CHARS = 100_000
MAX_SHORT_FIELD_CHARS = 256
MAX_TOOL_CALLS = 100
# Traces in one BatchRecordTraces call.
MAX_BATCH_TRACES = 100
# A serialised RecordTraceRequest: half of what every service receives by default (the
# gateway's 1 MiB body limit plus overhead), so a trace always fits one call.
MAX_TRACE_BYTES = 512 * 1024
