"""CPU time of processes over a measured interval: where a benchmark's capacity went."""

from __future__ import annotations

import os

import psutil

from meshctl.mesh import Mesh


def mesh_pids(mesh: Mesh) -> dict[str, int]:
    pids = {name: child.pid for name, child in mesh.processes.items() if child.running()}
    pids["bench-client"] = os.getpid()
    return pids


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    seconds = {}
    for name, pid in pids.items():
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        seconds[name] = times.user + times.system
    return seconds


def cpu_ms_per_unit(before: dict[str, float], after: dict[str, float], units: int) -> dict[str, float]:
    """CPU milliseconds each process spent per unit of work (request, turn)."""
    return {name: round((after[name] - before[name]) * 1000 / max(units, 1), 3) for name in after if name in before}


# What a turn's CPU is counted over: the gateway and the services, not the stand-in for the
# model nor the load generator (Postgres is not a child of the mesh, so it is not counted).
NOT_THE_MESH = ("offline-llm", "bench-client")


def mesh_cpu_ms(per_process: dict[str, float]) -> float:
    """The per-unit CPU of the gateway and services together."""
    return round(sum(ms for name, ms in per_process.items() if name not in NOT_THE_MESH), 3)
