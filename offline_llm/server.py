"""Running the offline LLM server on uvicorn, in-process or as the main program."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass

import uvicorn

from offline_llm.app import create_app
from offline_llm.settings import OfflineLLMSettings


class _ReportingServer(uvicorn.Server):
    """A uvicorn server that says when it is listening, optionally leaving signals to its host."""

    def __init__(self, config: uvicorn.Config, *, handle_signals: bool) -> None:
        super().__init__(config)
        self.listening = asyncio.Event()
        self._handle_signals = handle_signals

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.should_exit:
            self.listening.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # In-process, SIGINT belongs to the host (a test runner, the mesh launcher), not to us.
        if self._handle_signals:
            with super().capture_signals():
                yield
        else:
            yield


async def _start(server: _ReportingServer, sock: socket.socket) -> asyncio.Task[None]:
    """Start serving and return once listening; raises if the server stopped instead."""
    task = asyncio.create_task(server.serve(sockets=[sock]))
    ready = asyncio.create_task(server.listening.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if not server.listening.is_set():
        ready.cancel()
        await task
        raise RuntimeError("the offline LLM server stopped while starting")
    return task


@dataclass(frozen=True)
class RunningServer:
    host: str
    port: int

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, as `OpenAI(base_url=...)` and `ChatOpenAI(base_url=...)` expect it."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket bound before uvicorn starts, so port 0 yields a known free port."""
    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on sockets whose proto says TCP,
    # and without it every response waits ~40 ms on Nagle and delayed ACKs.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(settings: OfflineLLMSettings) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings),
        log_level="warning",
        access_log=False,
        lifespan="off",
        # Stalled streams would otherwise hold shutdown for their whole stall.
        timeout_graceful_shutdown=1,
    )


@contextlib.asynccontextmanager
async def serve_in_process(settings: OfflineLLMSettings | None = None) -> AsyncIterator[RunningServer]:
    """Serve on the running event loop until the block exits; port 0 picks a free port."""
    settings = settings or OfflineLLMSettings()
    sock = bind_socket(settings.host, settings.port)
    server = _ReportingServer(_uvicorn_config(settings), handle_signals=False)
    try:
        task = await _start(server, sock)
        try:
            yield RunningServer(settings.host, sock.getsockname()[1])
        finally:
            server.should_exit = True
            await task
    finally:
        sock.close()


async def serve_forever(settings: OfflineLLMSettings) -> None:
    """Serve until SIGINT or SIGTERM, printing one line once the port is listening."""
    sock = bind_socket(settings.host, settings.port)
    server = _ReportingServer(_uvicorn_config(settings), handle_signals=True)
    task = await _start(server, sock)
    print(f"offline LLM listening on http://{settings.host}:{sock.getsockname()[1]}", flush=True)
    await task
