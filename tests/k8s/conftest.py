"""Fixtures for the rolling-restart tests: the manifests' drain plans, a slow offline model,
and a fleet of two agents and two gateways."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from meshctl.mesh import GATEWAY_READY, OFFLINE_LLM_READY, Mesh, free_port
from meshctl.processes import ChildProcess, python_module
from tests.support.k8s import k8s_check
from tests.support.rolling_clients import Replica
from tests.support.rolling_fleet import RATE_LIMITS, SCALE, TOKENS_PER_S, Fleet, scaled


@pytest.fixture(scope="module")
def plans() -> dict[str, Any]:
    docs = k8s_check.render_overlay("prod")
    return {name: k8s_check.drain_plan(docs, name) for name in ("agent", "gateway")}


@pytest.fixture(scope="module")
def slow_llm(mesh: Mesh) -> Iterator[str]:
    child = ChildProcess(
        "offline-llm-rolling",
        python_module("offline_llm"),
        {**mesh.env, "OFFLINE_LLM_PORT": str(free_port()), "OFFLINE_LLM_TOKENS_PER_S": str(TOKENS_PER_S)},
        mesh.log_dir / "offline-llm-rolling.log",
        OFFLINE_LLM_READY,
    ).start()
    try:
        yield child.ready_match["url"].rstrip("/") + "/v1"
    finally:
        child.stop()


@pytest.fixture
def fleet(mesh: Mesh, plans: dict[str, Any], slow_llm: str) -> Iterator[Fleet]:
    """Two agents on the slow model and two gateways spreading calls over both (round_robin
    over an `ipv4:` list, as over a headless Service's DNS answer). Each test gets its own:
    a restart test leaves its replicas in no particular state."""
    agent_plan, gateway_plan = scaled(plans["agent"]), scaled(plans["gateway"])
    agent_ports = [free_port() for _ in range(2)]
    agent_target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in agent_ports)
    fleet = Fleet([], [])
    for i, port in enumerate(agent_ports, start=1):
        env = mesh.service_env(
            "agent", GRPC_PORT=str(port), METRICS_PORT=str(free_port()), LLM_BASE_URL=slow_llm, **agent_plan.env
        )
        child = ChildProcess(
            f"agent-rolling{i}", python_module("services.agent"), env, mesh.log_dir / f"agent-rolling{i}.log"
        )
        fleet.agents.append(Replica(f"agent-{i}", child, agent_plan, port))
    for i in (1, 2):
        port = free_port()
        env = {
            **mesh.env,
            **RATE_LIMITS,
            **gateway_plan.env,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(port),
            "GATEWAY_METRICS_PORT": str(free_port()),
            "GATEWAY_STREAM_TIMEOUT": f"{float(plans['gateway'].drain_s) * SCALE:g}",
            "AGENT_ADDR": agent_target,
        }
        child = ChildProcess(
            f"gateway-rolling{i}",
            python_module("gateway"),
            env,
            mesh.log_dir / f"gateway-rolling{i}.log",
            GATEWAY_READY,
        )
        fleet.gateways.append(Replica(f"gateway-{i}", child, gateway_plan, port, url=f"http://127.0.0.1:{port}"))
    replicas = [*fleet.agents, *fleet.gateways]
    try:
        # Agents first: a gateway that finds no agent listening backs off before trying again.
        for group in (fleet.agents, fleet.gateways):
            for replica in group:
                replica.child.spawn()
            for replica in group:
                replica.child.wait_ready(90)
        yield fleet
    finally:
        for replica in replicas:
            replica.child.stop()
