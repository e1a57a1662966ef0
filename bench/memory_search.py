"""Memory search latency and recall@10 at growing store sizes.

Memories are realistic generated sentences, embedded offline (the offline LLM's hashed
embeddings, dimension 384) and bulk-loaded through `MemoryStore.insert_many`, spread
evenly over 100 users. Each query is timed through `MemoryStore.search` (the service's own
search: exact for users with up to EXACT_SEARCH_MAX_ROWS memories, 2,000 by default, HNSW
with its per-user filter and iterative scan above; at 10k and 100k memories every user has
100 or 1,000, so this times the service's exact path; the result keys keep the name
`hnsw_search_ms`, which comparisons with older results read) and through
`MemoryStore.exact_search` (index scans off: brute force over the user's rows), which is
both the latency baseline and the ground truth for recall (ties in distance at the
cut-off can differ between the two, so recall is not always 1.0 on the exact path).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

from bench.stats import summary_ms
from offline_llm.embeddings import embed_text
from services.memory.memory_rows import NewMemory
from services.memory.settings import MemorySettings
from services.memory.store import MemoryStore

T = TypeVar("T")

USERS = 100
DIM = 384
QUERY_LIMIT = 10

_NAMES = ["Anna", "Ben", "Chen", "Dara", "Elif", "Femi", "Goran", "Hana", "Ivan", "Jia", "Kofi", "Lena", "Marco"]
_RELATIVES = ["sister", "brother", "mother", "father", "cousin", "best friend", "neighbour", "colleague", "partner"]
_CITIES = ["Lisbon", "Nairobi", "Osaka", "Toronto", "Berlin", "Lima", "Hanoi", "Oslo", "Cape Town", "Austin", "Porto"]
_JOBS = ["nurse", "teacher", "software engineer", "carpenter", "pilot", "chef", "lawyer", "architect", "farmer"]
_FOODS = ["sushi", "ramen", "lasagna", "tacos", "falafel", "curry", "dumplings", "paella", "pho", "pierogi"]
_HOBBIES = [
    "hiking",
    "rock climbing",
    "knitting",
    "chess",
    "birdwatching",
    "pottery",
    "sailing",
    "baking sourdough",
    "running marathons",
    "playing the cello",
    "gardening",
    "photography",
]
_PETS = ["dog", "cat", "parrot", "rabbit", "tortoise", "hamster", "horse"]
_PET_NAMES = ["Max", "Luna", "Pepper", "Biscuit", "Olive", "Milo", "Nala", "Ziggy", "Mochi"]
_BOOKS = ["science fiction", "crime novels", "poetry", "biographies", "history books", "fantasy sagas"]
_ALLERGIES = ["peanuts", "shellfish", "pollen", "cats", "gluten", "penicillin", "dust"]
_LANGS = ["Portuguese", "Japanese", "Swahili", "German", "Spanish", "Korean", "Italian", "Arabic"]
_DAYS = ["on weekends", "every Monday", "in the summer", "after work", "twice a month", "every morning"]
_YEARS = [str(y) for y in range(1990, 2026)]

_TEMPLATES: list[tuple[str, dict[str, list[str]]]] = [
    ("I work as a {job} in {city}.", {"job": _JOBS, "city": _CITIES}),
    (
        "My {rel} {name} lives in {city} and works as a {job}.",
        {"rel": _RELATIVES, "name": _NAMES, "city": _CITIES, "job": _JOBS},
    ),
    ("My favourite food is {food}, especially {when}.", {"food": _FOODS, "when": _DAYS}),
    ("I enjoy {hobby} {when}.", {"hobby": _HOBBIES, "when": _DAYS}),
    ("I have a {pet} called {pet_name}.", {"pet": _PETS, "pet_name": _PET_NAMES}),
    ("I am allergic to {allergy}.", {"allergy": _ALLERGIES}),
    ("I have been learning {lang} since {year}.", {"lang": _LANGS, "year": _YEARS}),
    ("I mostly read {books} {when}.", {"books": _BOOKS, "when": _DAYS}),
    (
        "I moved to {city} in {year} with my {rel} {name}.",
        {"city": _CITIES, "year": _YEARS, "rel": _RELATIVES, "name": _NAMES},
    ),
    ("My {rel} {name} taught me {hobby}.", {"rel": _RELATIVES, "name": _NAMES, "hobby": _HOBBIES}),
    ("I want to visit {city} and eat {food} there.", {"city": _CITIES, "food": _FOODS}),
]
_QUESTIONS = [
    "Where do I work and what is my job?",
    "What food do I like?",
    "Which hobbies do I have?",
    "What pets do I have?",
    "What am I allergic to?",
    "Which languages am I learning?",
    "Where does my sister live?",
    "What books do I read?",
    "When did I move to {city}?",
    "Do I like {food}?",
    "Who taught me {hobby}?",
]


def memory_sentence(rng: random.Random) -> str:
    template, slots = rng.choice(_TEMPLATES)
    return template.format(**{key: rng.choice(values) for key, values in slots.items()})


def query_sentence(rng: random.Random) -> str:
    return rng.choice(_QUESTIONS).format(city=rng.choice(_CITIES), food=rng.choice(_FOODS), hobby=rng.choice(_HOBBIES))


@dataclass
class MemoryBenchResult:
    size: int
    search_ms: dict[str, Any]
    exact_ms: dict[str, Any]
    recall_at_10: float
    load_s: float

    def as_json(self) -> dict[str, Any]:
        return {
            "memories": self.size,
            "users": USERS,
            "hnsw_search_ms": self.search_ms,
            "exact_search_ms": self.exact_ms,
            "recall_at_10": round(self.recall_at_10, 4),
            "load_seconds": round(self.load_s, 1),
        }


async def _timed(call: Awaitable[T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = await call
    return result, time.perf_counter() - started


class MemoryBench:
    """One store grown in steps (10k, then 100k), measured at each size."""

    def __init__(self, database_url: str, seed: int = 7) -> None:
        self._database_url = database_url
        self._rng = random.Random(seed)
        self._users = [str(uuid.UUID(int=self._rng.getrandbits(128), version=4)) for _ in range(USERS)]
        self._loaded = 0
        self._store: MemoryStore | None = None
        self._database: Any = None

    async def open(self) -> None:
        from services.memory.app import open_memory_store

        # Bulk loads of 2,000 rows into a growing HNSW index: not the serving bound (DB_STATEMENT_TIMEOUT_S).
        settings = MemorySettings(
            database_url=self._database_url, db_pool_size=4, db_max_overflow=0, db_statement_timeout_s=600
        )
        self._database, self._store = await open_memory_store(settings)

    async def close(self) -> None:
        if self._database is not None:
            await self._database.close()

    async def grow_to(self, size: int) -> float:
        """Bulk-loads memories until the store holds `size`; returns the seconds it took."""
        assert self._store is not None
        started = time.perf_counter()
        batch: list[NewMemory] = []
        while self._loaded < size:
            user = self._users[self._loaded % USERS]
            # The index keeps sentences unique per user (insert_many skips exact repeats).
            text = f"{memory_sentence(self._rng)} (note {self._loaded})"
            batch.append(NewMemory(user_id=user, text=text, embedding=embed_text(text, DIM)))
            self._loaded += 1
            if len(batch) == 2000:
                await self._store.insert_many(batch)
                batch = []
        if batch:
            await self._store.insert_many(batch)
        await self._analyze()
        return time.perf_counter() - started

    async def _analyze(self) -> None:
        from sqlalchemy import text

        assert self._database is not None
        async with self._database.engine.begin() as conn:
            await conn.execute(text("ANALYZE memory.memories"))

    async def measure(self, size: int, queries: int) -> MemoryBenchResult:
        load_s = await self.grow_to(size)
        assert self._store is not None
        search_s: list[float] = []
        exact_s: list[float] = []
        recalls: list[float] = []
        for i in range(queries + 10):
            user = self._rng.choice(self._users)
            vector = embed_text(query_sentence(self._rng), DIM)
            # The second query finds the user's pages in the buffer cache the first one filled
            # (a user's rows are spread over as many pages as rows here), so each goes first
            # half the time.
            if i % 2:
                exact, exact_took = await _timed(self._store.exact_search(user, vector, limit=QUERY_LIMIT))
                hits, search_took = await _timed(self._store.search(user, vector, limit=QUERY_LIMIT))
            else:
                hits, search_took = await _timed(self._store.search(user, vector, limit=QUERY_LIMIT))
                exact, exact_took = await _timed(self._store.exact_search(user, vector, limit=QUERY_LIMIT))
            if i < 10:
                continue  # warm-up: connections and plans
            search_s.append(search_took)
            exact_s.append(exact_took)
            truth = {m.memory.id for m in exact}
            if truth:
                recalls.append(len(truth & {m.memory.id for m in hits}) / len(truth))
        recall = sum(recalls) / len(recalls) if recalls else 0.0
        return MemoryBenchResult(size, summary_ms(search_s), summary_ms(exact_s), recall, load_s)
