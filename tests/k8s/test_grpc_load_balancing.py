"""One client channel, two replicas of a service: open_channel's default policy
(GRPC_LB_POLICY=round_robin) spreads the calls over both, as a `dns:///<headless
Service>` target does in the cluster (the resolver returns every ready pod; here gRPC's
`ipv4:` target names the two loopback replicas, since one DNS name cannot carry two
ports). pick_first, gRPC's default before, pins every call to one replica.

Calls are counted on each replica's own /metrics (grpc_server_handled_total).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from agentmesh.sessions.v1 import sessions_pb2, sessions_pb2_grpc
from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess
from runtime.clients import open_channel
from tests.support.users import MeshUser

CALLS = 40
METHOD = 'grpc_method="ListSessions"'


@pytest.fixture(scope="module")
def replicas(mesh: Mesh) -> Iterator[list[ChildProcess]]:
    started = [mesh.start_service("sessions", instance=f"-lb{i}") for i in (1, 2)]
    try:
        yield started
    finally:
        for child in started:
            child.stop()


def handled(replica: ChildProcess) -> int:
    """ListSessions calls this replica answered OK, from its /metrics."""
    text = httpx.get(f"http://{replica.metrics_addr}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("grpc_server_handled_total{") and METHOD in line and 'grpc_code="OK"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


async def call_both(replicas: list[ChildProcess], user: MeshUser, policy: str) -> list[int]:
    before = [handled(r) for r in replicas]
    ports = [re.sub(r"^.*:", "", r.addr) for r in replicas]
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
    channel = open_channel(target, lb_policy=policy)  # type: ignore[arg-type]
    try:
        stub = sessions_pb2_grpc.SessionServiceStub(channel)
        for _ in range(CALLS):
            await stub.ListSessions(sessions_pb2.ListSessionsRequest(), metadata=user.metadata, timeout=10)
    finally:
        await channel.close()
    counts = [handled(r) - b for r, b in zip(replicas, before, strict=True)]
    print(f"{policy or 'default'}: calls per replica {counts}")
    return counts


async def test_round_robin_spreads_calls_over_both_replicas(replicas: list[ChildProcess], user: MeshUser) -> None:
    counts = await call_both(replicas, user, "round_robin")
    assert sum(counts) == CALLS, counts
    # round_robin alternates over the ready subchannels: an even split, give or take the
    # calls made while the second connection was still coming up.
    assert min(counts) >= CALLS // 4, counts


async def test_open_channel_defaults_to_round_robin(
    replicas: list[ChildProcess], user: MeshUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GRPC_LB_POLICY", raising=False)
    counts = await call_both(replicas, user, None)  # type: ignore[arg-type]
    assert sum(counts) == CALLS and min(counts) >= CALLS // 4, counts


async def test_pick_first_pins_every_call_to_one_replica(replicas: list[ChildProcess], user: MeshUser) -> None:
    counts = await call_both(replicas, user, "pick_first")
    assert sorted(counts) == [0, CALLS], counts
