"""Issue 17's rolling restart, on loopback: two replicas of the agent and two of the gateway,
stopped the way the manifests stop a pod (`k8s_check.drain_plan`: preStop sleep, SIGTERM,
SIGKILL after the grace period), each restarted in turn while clients stream turns
without a pause. No turn may fail.

The manifests' 300 s drains and 320 s grace are scaled by SCALE (x0.1: preStop 0.5 s,
drain 30 s, grace 32 s, GATEWAY_STREAM_TIMEOUT 30 s), their relations kept. The agents get
their own offline model streaming TOKENS_PER_S tokens a second, so a turn takes a few
seconds and turns are in flight at every SIGTERM; the agent lets runs finish for
0.8 x drain - 1 s (23 s here), longer than any turn.

What the orchestration stands in for: during a gateway's preStop the clients stop sending
it new turns (the endpoints dropped the pod); an agent's SIGTERM closes its server, so the
gateways' round_robin channels route new calls to the other replica. Before the next
replica goes, every gateway must be connected to the restarted agent again (a new pod is
Ready before the old one goes; locally the same port comes back, and a channel's reconnect
backoff could otherwise still be waiting when the other replica leaves).

Clients: a stream that ends without `completed` or `error` (dropped, or broken by a restart)
is resumed through another gateway with `Last-Event-ID` (StreamRun). One client drops its
connection whenever its gateway starts terminating (as a client on a flaky network, or an
ingress that closes its upstreams would), so the resume path runs at every gateway restart,
not only when something breaks.
"""

from __future__ import annotations

import pytest

from tests.support.rolling_fleet import Fleet, check_rollout


# The fixtures start two agents and two gateways (~20 s on a loaded machine) before the
# restarts; an agent takes ~20 s to start there, and a gateway's channel up to ~15 s
# more to reconnect to it (gRPC's reconnect backoff), so the full rollout takes minutes.
@pytest.mark.slow
@pytest.mark.timeout(360)
async def test_rolling_restart_of_every_agent_and_gateway_fails_no_turn(fleet: Fleet) -> None:
    await check_rollout(fleet, [*fleet.agents, *fleet.gateways])
