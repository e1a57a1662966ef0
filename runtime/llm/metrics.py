"""The LLM client's Prometheus metrics, one set per service: `<service>_llm_<name>`.

Same suffixes and labels in every service (the agent's are `agent_llm_*`, the names its
dashboards and alerts use), so a panel written for one service works for another by
changing the prefix; the service is in the name, as for every other metric of the mesh.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


@dataclass(frozen=True)
class LLMMetrics:
    request_seconds: Histogram
    time_to_first_token_seconds: Histogram
    tokens_total: Counter
    retries_total: Counter
    fallbacks_total: Counter
    circuit_open: Gauge


@cache
def llm_metrics(service: str) -> LLMMetrics:
    """The metrics of `service`'s model calls (registered once per process)."""
    p = f"{service}_llm"
    return LLMMetrics(
        request_seconds=Histogram(
            f"{p}_request_seconds",
            "Duration of one model call, by model and outcome",
            ["model", "outcome"],
            buckets=LATENCY_BUCKETS,
        ),
        time_to_first_token_seconds=Histogram(
            f"{p}_time_to_first_token_seconds",
            "Time from sending a model call to its first streamed chunk",
            ["model"],
            buckets=LATENCY_BUCKETS,
        ),
        tokens_total=Counter(f"{p}_tokens_total", "Tokens by model and kind (prompt, completion)", ["model", "kind"]),
        retries_total=Counter(f"{p}_retries_total", "Model calls retried, by model and error kind", ["model", "error"]),
        fallbacks_total=Counter(
            f"{p}_fallbacks_total", "Calls that moved on from a model to the next one", ["from_model", "reason"]
        ),
        circuit_open=Gauge(f"{p}_circuit_open", "1 while a model is skipped after repeated failures", ["model"]),
    )
