"""Counters scraped from a service's /metrics, so a benchmark can say what the turns it timed
really did (memory searched or skipped, memory written or dropped)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

WATCHED = (
    "agent_memory_lookups",
    "agent_runs",
    "agent_run_events_written",
    "agent_outbox_deliveries",
)


async def scrape_counters(metrics_addr: str, families: tuple[str, ...] = WATCHED) -> dict[str, float]:
    """`family{label=value}` -> value, for the counter families named (sample names end in _total)."""
    if not metrics_addr:
        return {}
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://{metrics_addr}/metrics")).text
    counters: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in families:
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                counters[f"{sample.name}{{{labels}}}"] = sample.value
    return counters


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0.0) for key in sorted(after) if after[key] - before.get(key, 0.0)}
