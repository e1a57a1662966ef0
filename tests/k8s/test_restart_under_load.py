"""The short rolling restart `make test` runs: one gateway, then one agent, restarted while
clients stream turns; no turn may fail. The full rollout, its setting (SCALE, the slow model,
the clients' resumes) and what it stands in for are described in test_rolling_restart.py."""

from __future__ import annotations

import pytest

from tests.support.rolling_fleet import Fleet, check_rollout


@pytest.mark.timeout(240)
async def test_restarting_one_gateway_and_one_agent_under_load_fails_no_turn(fleet: Fleet) -> None:
    """The short variant `make test` runs: one replica of each, with turns in flight."""
    await check_rollout(fleet, [fleet.gateways[0], fleet.agents[0]])
