"""`make chaos` kept from rotting: its machinery on one fault in quick mode, against a real
supervised mesh of its own (the full suite is long and stays out of `make test`)."""

from __future__ import annotations

import pytest

from bench.chaos import ALL_FAULTS, Plan, markdown_table, run_suite


def test_plan_reads_the_environment() -> None:
    quick = Plan.from_env({"CHAOS_QUICK": "1", "CHAOS_FAULTS": "kill:agent, postgres:freeze"})
    assert quick.quick and quick.faults == ("kill:agent", "postgres:freeze")
    assert quick.outage_s < 60
    full = Plan.from_env({})
    assert full.faults == ALL_FAULTS and full.outage_s == 60
    assert Plan.from_env({"CHAOS_OUTAGE_S": "90"}).outage_s == 90
    with pytest.raises(SystemExit, match="unknown CHAOS_FAULTS"):
        Plan.from_env({"CHAOS_FAULTS": "kill:everything"})


@pytest.mark.slow  # ~80 s on a loaded 2-core machine, most of it starting and stopping the mesh
async def test_memory_down_under_load_loses_nothing_and_the_supervisor_brings_it_back() -> None:
    plan = Plan.from_env(
        {"CHAOS_QUICK": "1", "CHAOS_FAULTS": "down:memory", "CHAOS_OUTAGE_S": "4", "CHAOS_SETTLE_S": "1"}
    )
    document = await run_suite(plan)

    [result] = document["faults"]
    assert result["fault"] == "down:memory"
    assert result["duration_s"] >= plan.outage_s
    # Turns went on while memory was down, and the ones that succeeded owe memory a write each.
    assert result["turns_ok"] > 0 and result["succeeded_runs_checked"] > 0
    assert result["lost_memory_writes"] == 0 and result["lost_traces"] == 0 and result["dead_letters"] == 0
    # The supervisor (not the suite) started memory again; nothing was restarted by hand.
    assert result["supervisor_restarts"] == {"memory": 1}
    assert result["manual_restarts"] == [] and result["recover_s"] is not None
    assert document["ok"] is True
    assert "| down:memory |" in markdown_table(document)
