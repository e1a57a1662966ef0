"""Settings of the memory service (on top of the shared and LLM ones)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from runtime.llm_settings import LLMSettings
from runtime.settings import TokenClientSettings

Embedder = Literal["offline", "openai", "local"]


class MemorySettings(TokenClientSettings, LLMSettings):
    grpc_port: int = Field(default=50054, ge=0, le=65535)
    metrics_port: int = Field(default=9104, ge=0, le=65535)

    # `offline` and `openai` are one code path (the OpenAI-compatible /v1/embeddings at
    # LLM_BASE_URL); `local` runs all-MiniLM-L6-v2 in-process (needs the `semantic` extra).
    embedder: Embedder = "offline"
    embedding_model: str = "offline-embedding"
    # Fixed in the column type at the first migration; changing it needs a re-embedding.
    embedding_dim: int = Field(default=384, ge=1, le=2000)
    embedding_batch_size: int = Field(default=64, ge=1, le=2048)
    embedding_timeout_s: float = Field(default=10.0, gt=0)

    # Empty means LLM_MODELS in order (the primary, then the fallbacks); a model named
    # here is used alone, so its outage shows instead of being answered by another model.
    extraction_model: str = ""
    # Cosine similarity at or above which a candidate counts as already known (NOOP
    # without asking the LLM), and a fact the agent was shown counts as repeated.
    dedup_threshold: float = Field(default=0.95, gt=0, le=1)
    # Stored memories a candidate is compared with during resolution.
    resolution_neighbours: int = Field(default=5, ge=1, le=20)

    # Users with at most this many memories are searched exactly (all their distances,
    # found through the user index): recall 1.0 and a few ms at this size. Above it, HNSW.
    exact_search_max_rows: int = Field(default=2_000, ge=0)
    # HNSW search breadth and how far an iterative scan may go to fill `limit` rows of
    # one user; per query, so other users of the database keep their defaults.
    hnsw_ef_search: int = Field(default=100, ge=1, le=1000)
    hnsw_iterative_scan: Literal["relaxed_order", "strict_order", "off"] = "relaxed_order"
    hnsw_max_scan_tuples: int = Field(default=20_000, ge=1)
    search_default_limit: int = Field(default=10, ge=1, le=100)
    # Memories one user may hold (counted in Postgres under the user's lock, so across
    # replicas). An AddMemories call that would add past it stores nothing and answers
    # RESOURCE_EXHAUSTED / MEMORY_QUOTA_EXCEEDED; updates of existing facts still work.
    max_memories_per_user: int = Field(default=10_000, ge=1)
    # SearchMemories without min_score returns only hits at least this similar: below it a
    # hit is noise (the offline embedder scores unrelated facts 0-0.17 and related ones
    # 0.6+; OpenAI and MiniLM embeddings score unrelated text about 0.0-0.2, related 0.3+).
    # The agent reads the same variable for the facts it puts in the prompt. 0 = no floor.
    memory_min_score: float = Field(default=0.25, ge=0, le=1)
    # How often each replica deletes expired memories (with their history), and how many
    # per transaction; search and list skip them from their first expired second anyway.
    memory_sweep_interval_s: float = Field(default=60.0, gt=0)
    memory_sweep_batch: int = Field(default=500, ge=1, le=10_000)
    # How long an AddMemories idempotency key is remembered (a redelivery after that
    # would apply again): far longer than any retry schedule.
    memory_idempotency_ttl_s: float = Field(default=7 * 24 * 3600, gt=0)
