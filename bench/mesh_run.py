"""A mesh of its own for a benchmark: ephemeral ports, a temporary data folder, test settings.

`BENCH_ENV` is what every benchmark mesh runs with: `APP_ENV=test`, bcrypt at cost 4 (user
set-up is not what is measured), gateway rate limits and admission control for chat turns off
(the throughput cells measure what the mesh can do at a given concurrency; shedding what it
cannot is what `make loadtest-stress` measures), and the offline LLM at zero latency unless a
benchmark asks for another.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from meshctl.mesh import Mesh
from meshctl.processes import ChildProcess, python_module

BENCH_ENV = {
    "APP_ENV": "test",
    "BCRYPT_ROUNDS": "4",
    "RATE_LIMIT_ENABLED": "false",
    "ADMISSION_LIMIT_CHAT": "0",
    "ADMISSION_LIMIT_CHAT_STREAM": "0",
    "SHUTDOWN_GRACE_S": "5",
    "OFFLINE_LLM_TTFT_MS": "0",
    "OFFLINE_LLM_TOKENS_PER_S": "0",
}
OFFLINE_LLM_READY_PATTERN = r"offline LLM listening on (?P<url>http://\S+)"


@contextmanager
def bench_mesh(**env: str) -> Iterator[Mesh]:
    """A started mesh in a temporary folder, stopped and removed on exit."""
    base = Path(tempfile.mkdtemp(prefix="agentmesh-bench-"))
    mesh = Mesh(base / "data", base / "logs", ephemeral_ports=True, extra_env={**BENCH_ENV, **env})
    try:
        mesh.start()
        yield mesh
    finally:
        mesh.stop()
        shutil.rmtree(base, ignore_errors=True)


def set_llm_latency(mesh: Mesh, *, ttft_ms: float, tokens_per_s: float) -> None:
    """Restarts the offline LLM on the same port with another latency.

    The agent cannot forward the per-request `x-offline-*` headers, so the latency is the
    server's setting; the services' HTTP clients reconnect on their next call.
    """
    import re

    port = urlparse(mesh.llm_url).port
    old = mesh.processes["offline-llm"]
    old.stop()
    env = {
        **mesh.env,
        "OFFLINE_LLM_PORT": str(port),
        "OFFLINE_LLM_TTFT_MS": f"{ttft_ms:g}",
        "OFFLINE_LLM_TOKENS_PER_S": f"{tokens_per_s:g}",
    }
    child = ChildProcess(
        "offline-llm",
        python_module("offline_llm"),
        env,
        mesh.log_dir / "offline-llm.log",
        re.compile(OFFLINE_LLM_READY_PATTERN),
    ).start()
    mesh.processes["offline-llm"] = child


def has_service(mesh: Mesh, name: str) -> bool:
    return name in mesh.processes and mesh.processes[name].running()
