"""Traces read from Langfuse (`EVALS_TRACE_SOURCE=langfuse`), as the seed's evaluator did.

Langfuse v3+ has no trace list endpoint; a turn is its root observation, whose input and
output are the user's message and the answer. Recent root observations are imported into
the traces table (idempotent on the trace id) at the start of every run, so the rest of
the pipeline is the same whatever the source.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from runtime.logging import get_logger
from services.evals.store import EvalStore, TraceRecord

log = get_logger(__name__)
PAGE_SIZE = 100
FIELDS = "core,basic,io,model,metrics"


def text_of(value: Any) -> str:
    """The readable text of a Langfuse input or output: a string, a message, or the last
    user/assistant message of a list."""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return value if isinstance(decoded, str) else text_of(decoded)
    if isinstance(value, dict):
        for key in ("content", "message", "text", "output", "input"):
            if key in value:
                return text_of(value[key])
        if isinstance(value.get("messages"), list):
            return text_of(value["messages"])
    if isinstance(value, list) and value:
        return text_of(value[-1])
    return "" if value is None else json.dumps(value, ensure_ascii=False)


class LangfuseTraceImporter:
    def __init__(self, client, store: EvalStore, *, lookback_h: float, limit: int) -> None:
        self._client = client
        self._store = store
        self._lookback = timedelta(hours=lookback_h)
        self._limit = limit

    async def import_recent(self) -> int:
        since = datetime.now(UTC) - self._lookback
        observations = await asyncio.to_thread(self._fetch, since)
        created = 0
        for obs in observations:
            created += await self._store.insert_trace(
                TraceRecord(
                    trace_id=obs.trace_id,
                    session_id=obs.session_id or "",
                    user_id=obs.user_id or "",
                    input=text_of(obs.input)[:100_000],
                    output=text_of(obs.output)[:100_000],
                    model=obs.model or "",
                    latency_ms=int((obs.latency or 0) * 1000),
                    created_at=obs.start_time,
                )
            )
        log.info("langfuse_traces_imported", fetched=len(observations), created=created)
        return created

    def _fetch(self, since: datetime) -> list[Any]:
        found: list[Any] = []
        cursor: str | None = None
        while len(found) < self._limit:
            page = self._client.api.observations.get_many(
                fields=FIELDS,
                is_root_observation=True,
                from_start_time=since,
                limit=min(PAGE_SIZE, self._limit - len(found)),
                cursor=cursor,
            )
            found.extend(o for o in page.data if o.output is not None)
            cursor = page.meta.cursor
            if not cursor or not page.data:
                break
        return found
