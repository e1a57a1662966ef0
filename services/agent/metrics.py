"""The agent's own Prometheus metrics (beside the gRPC server ones; its model calls' `agent_llm_*`
are runtime/llm/metrics.py's, registered by the chain)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

memory_lookups_total = Counter(
    "agent_memory_lookups_total", "Long-term memory searches by result (hit, miss, timeout, error)", ["result"]
)
memory_writes_total = Counter(
    "agent_memory_writes_total", "Background memory writes by result (ok, error, dropped)", ["result"]
)
runs_in_flight = Gauge("agent_runs_in_flight", "Agent turns running in this replica")
runs_total = Counter("agent_runs_total", "Agent turns by outcome (completed, failed, cancelled)", ["outcome"])
runs_refused_total = Counter(
    "agent_runs_refused_total", "New turns refused before they started, by reason (replica_full)", ["reason"]
)
run_lock_conflicts_total = Counter("agent_run_lock_conflicts_total", "Turns refused because one was already running")
eval_traces_total = Counter("agent_eval_traces_total", "Eval traces by result (sent, dropped, failed)", ["result"])
tool_calls_total = Counter("agent_tool_calls_total", "Tool calls by tool and outcome (ok, error)", ["tool", "outcome"])
run_events_written_total = Counter("agent_run_events_written_total", "Run events persisted for replay")
runs_lost_total = Counter(
    "agent_runs_lost_total", "Runs whose replica stopped renewing their lease, failed by another replica"
)
run_follows_total = Counter(
    "agent_run_follows_total", "Streams following a run, by where its events came from (local, stored)", ["source"]
)
outbox_delivered_total = Counter(
    "agent_outbox_deliveries_total",
    "Outbox delivery attempts by kind (memory.add, evals.trace) and result (delivered, retry, dead)",
    ["kind", "result"],
)
outbox_depth = Gauge("agent_outbox_depth", "Hand-offs waiting in the outbox, by kind", ["kind"])
outbox_oldest_age_seconds = Gauge(
    "agent_outbox_oldest_age_seconds", "Age of the oldest hand-off waiting in the outbox, by kind", ["kind"]
)
interrupts_total = Counter(
    "agent_interrupts_total", "Runs paused for a person, by kind (tool_approval, question)", ["kind"]
)
decisions_total = Counter(
    "agent_decisions_total", "Decisions on interrupts, by decision (approve, reject, edit, answer)", ["decision"]
)
decision_seconds = Histogram(
    "agent_decision_seconds",
    "Time from an interrupt to its decision",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600),
)
