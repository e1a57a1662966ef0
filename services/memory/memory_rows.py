"""What the memory tables hold, as the rest of the service sees it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class MemoryRow:
    id: str
    user_id: str
    text: str
    session_id: str
    created_at: datetime
    updated_at: datetime
    expire_time: datetime | None = None


@dataclass(frozen=True)
class HistoryRow:
    id: str
    action: str
    text: str
    previous_text: str
    session_id: str
    source: str
    created_at: datetime


@dataclass(frozen=True)
class ScoredMemory:
    memory: MemoryRow
    score: float


@dataclass(frozen=True)
class SearchTuning:
    """How each search runs, applied in its own transaction: exact for users with at most
    `exact_max_rows` memories, HNSW with these knobs beyond."""

    exact_max_rows: int = 2_000
    ef_search: int = 100
    iterative_scan: str = "relaxed_order"
    max_scan_tuples: int = 20_000


@dataclass(frozen=True)
class NewMemory:
    user_id: str
    text: str
    embedding: Sequence[float]
    session_id: str = ""


def memory_row(row: Any) -> MemoryRow:
    session_id = str(row.session_id) if row.session_id else ""
    return MemoryRow(
        str(row.id), str(row.user_id), row.text, session_id, row.created_at, row.updated_at, row.expire_time
    )


def history_row(row: Any) -> HistoryRow:
    session_id = str(row.session_id) if row.session_id else ""
    return HistoryRow(str(row.id), row.action, row.text, row.previous_text, session_id, row.source, row.created_at)


def session_uuid(session_id: str) -> uuid.UUID | None:
    return uuid.UUID(session_id) if session_id else None
