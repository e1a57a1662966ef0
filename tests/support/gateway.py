"""The gateway in tests: in-process (uvicorn in the test's event loop, in front of stand-in
upstreams) or as a real `python -m gateway` process in front of the mesh; and readers for
what it answers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from gateway.app import create_app
from gateway.settings import GatewaySettings
from tests.support.waiting import eventually, eventually_sync

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def standin_settings(address: str, **overrides: object) -> GatewaySettings:
    values: dict[str, object] = {
        "sessions_addr": address,
        "agent_addr": address,
        # Upstreams the stand-in does not serve point at a closed port: they answer 503.
        "auth_addr": f"127.0.0.1:{free_port()}",
        "memory_addr": f"127.0.0.1:{free_port()}",
        "evals_addr": f"127.0.0.1:{free_port()}",
        "rate_limit_enabled": False,
        "gateway_sse_heartbeat": 0.2,
        # Several in-process gateways run at once; each takes a free metrics port.
        "gateway_metrics_port": 0,
        "_env_file": None,
    }
    values.update(overrides)
    return GatewaySettings(**values)  # type: ignore[arg-type]


class GatewayUrl(str):
    """The public base URL, which also knows the gateway's metrics port."""

    metrics_url: str


@contextlib.asynccontextmanager
async def serve_in_process(settings: GatewaySettings) -> AsyncIterator[GatewayUrl]:
    """The gateway app on a real loopback socket (uvicorn in this event loop); yields its base URL."""
    port = free_port()
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", proxy_headers=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> None:
        if task.done():
            task.result()  # a start-up failure surfaces here, not as a timeout
        assert server.started, "the gateway did not start within 10 s"

    await eventually(started, timeout_s=10, interval_s=0.02)
    url = GatewayUrl(f"http://127.0.0.1:{port}")
    url.metrics_url = f"http://{app.state.gateway.metrics_address}"
    try:
        yield url
    finally:
        server.should_exit = True
        await task


@dataclass
class GatewayProcess:
    url: str
    env: dict[str, str]
    log_path: Path | None = None

    @property
    def metrics_url(self) -> str:
        """The metrics port (/metrics, /upstreamz), which is not the public one."""
        return f"http://127.0.0.1:{self.env['GATEWAY_METRICS_PORT']}"


def start_gateway_process(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    full_env = {**os.environ, **env, "GATEWAY_PORT": str(port), "GATEWAY_HOST": "127.0.0.1"}
    full_env.setdefault("GATEWAY_METRICS_PORT", str(free_port()))
    # Output goes to a file: an unread pipe fills up and blocks the gateway mid-request.
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway"], cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> None:
        if process.poll() is not None:
            raise RuntimeError(f"the gateway exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
        try:
            status = httpx.get(f"{url}/healthz", timeout=1).status_code
        except httpx.TransportError as exc:
            raise AssertionError(f"/healthz unreachable: {exc}") from exc
        assert status == 200, f"/healthz answered {status}"

    try:
        eventually_sync(healthy, timeout_s=30, interval_s=0.1)
    except AssertionError as exc:
        process.kill()
        process.wait()
        raise RuntimeError(f"the gateway did not answer /healthz within 30s ({exc}); see {log_path}") from exc
    return process, url


def stop_gateway_process(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def gateway_process(env: dict[str, str]) -> Iterator[GatewayProcess]:
    log_dir = Path(tempfile.mkdtemp(prefix="gateway-test-"))
    env = {**env, "GATEWAY_METRICS_PORT": env.get("GATEWAY_METRICS_PORT") or str(free_port())}
    process, url = start_gateway_process(env, log_dir / "gateway.log")
    try:
        yield GatewayProcess(url, env, log_dir / "gateway.log")
    finally:
        stop_gateway_process(process)


@contextlib.contextmanager
def offline_llm_stall(llm_root: str, *, stall_s: float, after_tokens: int) -> Iterator[None]:
    """Every streamed answer of the offline LLM pauses after `after_tokens` tokens, until exit.

    Every request, not just the next one: background work (memory extraction, judging) also calls
    the model and would otherwise take a one-shot fault meant for the turn under test.
    """
    stall = {"model": "*", "kind": "stall", "stall_s": stall_s, "after_tokens": after_tokens, "count": -1}
    assert httpx.post(f"{llm_root}/_offline/faults", json=stall, timeout=10).status_code == 200
    try:
        yield
    finally:
        httpx.post(f"{llm_root}/_offline/reset", timeout=10)


def sse_events(text: str) -> list[tuple[str, str]]:
    """(event name, data) for every event of an SSE body; comments are skipped."""
    events = []
    for block in text.split("\n\n"):
        name, data = "message", []
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            if field == "event":
                name = value.strip()
            elif field == "data":
                data.append(value.removeprefix(" "))
        if data:
            events.append((name, "\n".join(data)))
    return events


async def upgrade_status(base_url: str, path: str) -> bytes:
    """The status line the gateway answers a websocket upgrade request with."""
    host, port = base_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    await writer.drain()
    try:
        return (await asyncio.wait_for(reader.read(200), 10)).split(b"\r\n")[0]
    finally:
        writer.close()
