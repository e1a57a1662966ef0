"""Reading scores back: listing with ownership rules and paging, and summaries over a
time window."""

from __future__ import annotations

import re
from datetime import datetime

from runtime.errors import InvalidArgument, PermissionDenied
from runtime.paging import decode_page_token, one_page
from runtime.paging import page_size as bounded_page_size
from runtime.principal import Principal
from services.evals.metrics_catalog import MetricCatalog
from services.evals.store import EvalStore, MetricSummary, ScoreRow

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
DEFAULT_WINDOW = "24h"
WINDOW_RE = re.compile(r"^(?P<amount>[1-9][0-9]{0,5})(?P<unit>[smhd])$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
MAX_WINDOW_S = 400 * 86_400


def window_seconds(window: str) -> int:
    match = WINDOW_RE.match(window)
    if match is None:
        raise InvalidArgument(
            "window must be a number and a unit s/m/h/d, like 15m, 24h or 30d", reason="WINDOW_INVALID"
        )
    seconds = int(match["amount"]) * UNIT_SECONDS[match["unit"]]
    if seconds > MAX_WINDOW_S:
        raise InvalidArgument("window must be at most 400 days", reason="WINDOW_INVALID")
    return seconds


class Scoreboard:
    def __init__(self, store: EvalStore, catalog: MetricCatalog) -> None:
        self._store = store
        self._catalog = catalog

    async def list(
        self, caller: Principal, *, metric: str, trace_id: str, session_id: str, page_size: int, page_token: str
    ) -> tuple[list[ScoreRow], str]:
        size = bounded_page_size(page_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        owner = None if caller.is_admin else caller.user_id
        if owner is not None:
            await self._check_owner(owner, trace_id, session_id)
        after = decode_page_token(page_token, datetime.fromisoformat, str, str) if page_token else None
        # One extra row tells whether another page exists without a COUNT.
        rows = await self._store.list_scores(
            metric=metric, trace_id=trace_id, session_id=session_id, owner=owner, limit=size + 1, after=after
        )
        return one_page(rows, size, lambda row: (row.graded_at, row.trace_id, row.metric))

    async def _check_owner(self, user_id: str, trace_id: str, session_id: str) -> None:
        if trace_id:
            owner = await self._store.trace_owner(trace_id)
            if owner is not None and owner != user_id:
                raise PermissionDenied("these scores belong to another user", reason="SCORES_NOT_YOURS")
        if session_id and await self._store.session_has_other_owner(session_id, user_id):
            raise PermissionDenied("these scores belong to another user", reason="SCORES_NOT_YOURS")

    async def summary(self, metric: str, window: str) -> tuple[str, MetricSummary]:
        if not metric:
            raise InvalidArgument("metric is required", reason="METRIC_REQUIRED")
        self._catalog.get(metric)
        window = window or DEFAULT_WINDOW
        return window, await self._store.summary(metric, window_seconds(window))
