"""Memory-specific metrics, beside the shared gRPC ones."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from runtime.metrics import LATENCY_BUCKETS

memory_events_total = Counter(
    "memory_events_total",
    "Outcomes of candidate facts in AddMemories, by action (ADD, UPDATE, DELETE, NOOP, DROPPED).",
    ["action"],
)
memory_search_seconds = Histogram(
    "memory_search_seconds",
    "Time of the store-level vector search (the query embedding excluded).",
    buckets=LATENCY_BUCKETS,
)
memory_embedding_seconds = Histogram(
    "memory_embedding_seconds",
    "Time to embed one batch of texts, by embedder.",
    ["embedder"],
    buckets=LATENCY_BUCKETS,
)
memory_llm_failures_total = Counter(
    "memory_llm_failures_total",
    "LLM calls of fact extraction or resolution that failed or answered malformed JSON, by stage.",
    ["stage"],
)
