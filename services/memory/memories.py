"""The rules of the memory service: validation, what becomes a candidate, ownership,
paging. Storage is `store.py`, the ADD/UPDATE/DELETE/NOOP decision `resolution.py`."""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from runtime.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted
from runtime.ids import parse_id, parse_uuid
from runtime.paging import decode_page_token, one_page, page_size
from services.memory.embeddings import Embedder, Vector
from services.memory.extraction import FactExtractor
from services.memory.facts import MAX_FACT_LENGTH, Candidate, normalise_fact
from services.memory.memory_rows import HistoryRow, MemoryRow, ScoredMemory
from services.memory.metrics import memory_events_total
from services.memory.resolution import Outcome, Resolver, cosine
from services.memory.store import MemoryStore
from services.memory.user_memories import MemoryQuotaExceeded

MAX_MESSAGES = 50
MAX_FACTS = 50
MAX_CONTEXT_FACTS = 100
MAX_MESSAGE_LENGTH = 10_000
MAX_QUERY_LENGTH = 2_000
MAX_SEARCH_LIMIT = 100
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
DEFAULT_HISTORY_PAGE_SIZE = 50
MAX_IDEMPOTENCY_KEY_LENGTH = 128
CHANGES = ("ADD", "UPDATE", "DELETE")
ROLES = frozenset({"user", "assistant", "system", "tool"})


@dataclass(frozen=True)
class AddRequest:
    messages: Sequence[tuple[str, str]] = ()
    facts: Sequence[str] = ()
    session_id: str = ""
    context_facts: Sequence[str] = field(default_factory=tuple)
    expire_time: datetime | None = None
    idempotency_key: str = ""


def validate_add(request: AddRequest) -> None:
    if not request.messages and not request.facts:
        raise InvalidArgument("messages or facts are required", reason="NOTHING_TO_ADD")
    if len(request.messages) > MAX_MESSAGES:
        raise InvalidArgument(f"at most {MAX_MESSAGES} messages per call", reason="TOO_MANY_MESSAGES")
    if len(request.facts) > MAX_FACTS:
        raise InvalidArgument(f"at most {MAX_FACTS} facts per call", reason="TOO_MANY_FACTS")
    if len(request.context_facts) > MAX_CONTEXT_FACTS:
        raise InvalidArgument(f"at most {MAX_CONTEXT_FACTS} context facts", reason="TOO_MANY_CONTEXT_FACTS")
    for role, content in request.messages:
        if role not in ROLES:
            raise InvalidArgument(f"message role must be one of {sorted(ROLES)}", reason="MESSAGE_ROLE_INVALID")
        if len(content) > MAX_MESSAGE_LENGTH:
            raise InvalidArgument(
                f"message content must be at most {MAX_MESSAGE_LENGTH} characters", reason="MESSAGE_TOO_LONG"
            )
    for fact in request.facts:
        if not 1 <= len(fact.strip()) <= MAX_FACT_LENGTH:
            raise InvalidArgument(f"each fact must be 1-{MAX_FACT_LENGTH} characters", reason="FACT_LENGTH_INVALID")
    if any(len(fact) > MAX_FACT_LENGTH for fact in request.context_facts):
        raise InvalidArgument(
            f"each context fact must be at most {MAX_FACT_LENGTH} characters", reason="CONTEXT_FACT_TOO_LONG"
        )
    parse_optional_session_id(request.session_id)
    if len(request.idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH or any(
        not ch.isprintable() for ch in request.idempotency_key
    ):
        raise InvalidArgument(
            f"idempotency_key must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} printable characters",
            reason="IDEMPOTENCY_KEY_INVALID",
        )
    if request.expire_time is not None:
        check_future(request.expire_time)


def check_future(expire_time: datetime) -> None:
    if expire_time <= datetime.now(UTC):
        raise InvalidArgument("expire_time must be in the future", reason="EXPIRE_TIME_INVALID")


def parse_optional_session_id(session_id: str) -> None:
    parse_id(session_id, "session_id", required=False)


def parse_memory_id(memory_id: str) -> uuid.UUID:
    return parse_uuid(memory_id, "memory_id")


def unique_candidates(candidates: list[Candidate]) -> list[Candidate]:
    seen: set[tuple[str, bool]] = set()
    unique = []
    for candidate in candidates:
        key = (candidate.normalised, candidate.retraction)
        if candidate.normalised and key not in seen:
            seen.add(key)
            unique.append(candidate)
    return unique


class Memories:
    def __init__(
        self,
        store: MemoryStore,
        embedder: Embedder,
        extractor: FactExtractor,
        resolver: Resolver,
        *,
        dedup_threshold: float,
        default_search_limit: int,
        max_memories_per_user: int = 10_000,
        default_min_score: float = 0.0,
    ) -> None:
        self._store = store
        self._embedder = embedder
        self._extractor = extractor
        self._resolver = resolver
        self._dedup_threshold = dedup_threshold
        self._default_search_limit = default_search_limit
        self._max_memories = max_memories_per_user
        self._default_min_score = default_min_score

    async def add(self, user_id: str, request: AddRequest) -> list[Outcome]:
        """The outcome per candidate; [] for a call whose idempotency key was already
        applied (checked before the model is asked, and again under the lock)."""
        validate_add(request)
        key = request.idempotency_key
        if key and await self._store.key_used(user_id, key):
            return []
        candidates = [Candidate(fact.strip(), given=True) for fact in request.facts]
        candidates += await self._extractor.extract(
            content for role, content in request.messages if role == "user" and content.strip()
        )
        candidates = unique_candidates(candidates)
        if not candidates:
            return []
        vectors = await self._embedder.embed([c.text for c in candidates])
        kept = await self._without_context_facts(list(zip(candidates, vectors, strict=True)), request.context_facts)
        if not kept:
            return []
        try:
            async with self._store.locked_user(
                user_id, max_memories=self._max_memories, new_expire_time=request.expire_time
            ) as memories:
                if key and not await memories.claim(key):
                    return []
                outcomes = [
                    await self._resolver.resolve(memories, candidate, vector, request.session_id)
                    for candidate, vector in kept
                ]
                for outcome in outcomes:
                    if outcome.action in CHANGES and outcome.memory is not None:
                        await memories.record(
                            outcome.action,
                            outcome.memory,
                            previous_text=outcome.previous_text,
                            session_id=request.session_id,
                            source="add_memories",
                        )
        except MemoryQuotaExceeded as full:
            # All or nothing: the call is one transaction, so a call that would cross the
            # quota stores none of its facts (updates, deletes and repeats included).
            raise ResourceExhausted(
                f"at most {full.limit} memories per user; delete some (or update existing ones) to add more",
                reason="MEMORY_QUOTA_EXCEEDED",
                metadata={"quota": "MAX_MEMORIES_PER_USER", "limit": str(full.limit)},
            ) from None
        for outcome in outcomes:
            memory_events_total.labels(action=outcome.action).inc()
        return outcomes

    async def _without_context_facts(
        self, candidates: list[tuple[Candidate, Vector]], context_facts: Sequence[str]
    ) -> list[tuple[Candidate, Vector]]:
        """Drops what the model was shown and the user's turn merely repeats: storing it
        again is how memories feed on themselves. Retractions always pass."""
        context = [fact.strip() for fact in context_facts if fact.strip()]
        if not context or all(c.retraction for c, _ in candidates):
            return candidates
        shown = {normalise_fact(fact) for fact in context}
        shown_vectors = await self._embedder.embed(context)
        kept = []
        for candidate, vector in candidates:
            repeated = candidate.normalised in shown or any(
                cosine(vector, other) >= self._dedup_threshold for other in shown_vectors
            )
            if repeated and not candidate.retraction:
                memory_events_total.labels(action="DROPPED").inc()
                continue
            kept.append((candidate, vector))
        return kept

    async def search(self, user_id: str, query: str, limit: int, min_score: float | None) -> list[ScoredMemory]:
        """`min_score` None means the service's default (MEMORY_MIN_SCORE)."""
        if min_score is None:
            min_score = self._default_min_score
        query = query.strip()
        if not query:
            raise InvalidArgument("query must not be empty", reason="QUERY_REQUIRED")
        if len(query) > MAX_QUERY_LENGTH:
            raise InvalidArgument(f"query must be at most {MAX_QUERY_LENGTH} characters", reason="QUERY_TOO_LONG")
        if not 0 <= limit <= MAX_SEARCH_LIMIT:
            raise InvalidArgument(f"limit must be between 0 and {MAX_SEARCH_LIMIT}", reason="LIMIT_INVALID")
        if math.isnan(min_score) or not 0.0 <= min_score <= 1.0:
            raise InvalidArgument("min_score must be between 0 and 1", reason="MIN_SCORE_INVALID")
        (vector,) = await self._embedder.embed([query])
        return await self._store.search(user_id, vector, limit=limit or self._default_search_limit, min_score=min_score)

    async def list(
        self, user_id: str, requested_size: int, page_token: str, session_id: str = ""
    ) -> tuple[list[MemoryRow], str]:
        size = page_size(requested_size, default=DEFAULT_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        session = parse_id(session_id, "session_id", required=False)
        after = decode_page_token(page_token, datetime.fromisoformat, uuid.UUID) if page_token else None
        rows = await self._store.list(user_id, size + 1, after, uuid.UUID(session) if session else None)
        return one_page(rows, size, lambda row: (row.created_at, row.id))

    async def update(
        self,
        user_id: str,
        memory_id: str,
        *,
        text: str | None,
        set_expire: bool,
        expire_time: datetime | None,
    ) -> MemoryRow:
        """UpdateMemory: a new text (re-embedded; history records it) and/or expire_time
        (None with `set_expire` = never)."""
        parsed = str(parse_memory_id(memory_id))
        if text is not None:
            text = text.strip()
            if not 1 <= len(text) <= MAX_FACT_LENGTH:
                raise InvalidArgument(f"text must be 1-{MAX_FACT_LENGTH} characters", reason="FACT_LENGTH_INVALID")
        if text is None and not set_expire:
            raise InvalidArgument("nothing to update: update_mask names no field", reason="UPDATE_MASK_EMPTY")
        if set_expire and expire_time is not None:
            check_future(expire_time)
        vector = (await self._embedder.embed([text]))[0] if text is not None else None
        async with self._store.locked_user(user_id) as memories:
            current = await memories.get(parsed)
            if current is None:
                raise NotFound("memory not found", reason="MEMORY_NOT_FOUND")
            if text is not None:
                same = await memories.find_normalised(normalise_fact(text))
                if same is not None and same.id != parsed:
                    raise AlreadyExists(
                        "another memory already says this",
                        reason="MEMORY_ALREADY_EXISTS",
                        metadata={"memory_id": same.id},
                    )
                if text == current.text:
                    text, vector = None, None
            row = await memories.update_fields(
                parsed, text_=text, embedding=vector, set_expire=set_expire, expire_time=expire_time
            )
            if row is None:
                raise NotFound("memory not found", reason="MEMORY_NOT_FOUND")
            if text is not None:
                await memories.record(
                    "UPDATE", row, previous_text=current.text, session_id=row.session_id, source="update_memory"
                )
        memory_events_total.labels(action="UPDATE").inc()
        return row

    async def history(
        self, user_id: str, memory_id: str, requested_size: int, page_token: str
    ) -> tuple[list[HistoryRow], str]:
        size = page_size(requested_size, default=DEFAULT_HISTORY_PAGE_SIZE, maximum=MAX_PAGE_SIZE)
        parsed = parse_memory_id(memory_id)
        after = decode_page_token(page_token, datetime.fromisoformat, uuid.UUID) if page_token else None
        rows = await self._store.history(user_id, parsed, size + 1, after)
        if not rows and after is None and not await self._store.exists(user_id, parsed):
            raise NotFound("memory not found", reason="MEMORY_NOT_FOUND")
        return one_page(rows, size, lambda row: (row.created_at, row.id))

    async def delete(self, user_id: str, memory_id: str) -> None:
        if not await self._store.delete(user_id, parse_memory_id(memory_id)):
            raise NotFound("memory not found", reason="MEMORY_NOT_FOUND")

    async def delete_all(self, user_id: str) -> int:
        return await self._store.delete_all(user_id)

    async def erase_user(self, erasure_id: str, user_id: str) -> dict[str, int]:
        """Account deletion: the user's memories, their history and idempotency records."""
        return await self._store.erase_user(erasure_id, user_id)
