"""`python -m gateway`: serve the HTTP/JSON gateway with uvicorn."""

from __future__ import annotations

import socket

import uvicorn
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.settings import load_gateway_settings
from runtime.entrypoint import exit_on_configuration_error
from runtime.logging import configure_logging
from runtime.tracing import configure_gateway_tracing, shutdown_tracing


class _AnnouncingServer(uvicorn.Server):
    """Prints `gateway listening on <url> metrics=<host:port>` once the sockets are bound.

    meshctl and the tests wait for that line (with GATEWAY_PORT=0 it is the only way to learn the
    port), and it must come after the bind, not when the process starts.
    """

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        # The lifespan (which binds the metrics port) has run by now.
        metrics = self.app.state.gateway.metrics_address
        for server in getattr(self, "servers", []):
            for bound in server.sockets:
                host, port = bound.getsockname()[:2]
                print(f"gateway listening on http://{host}:{port} metrics={metrics}", flush=True)


def main() -> None:
    settings = load_gateway_settings()
    configure_logging(service="gateway", level=settings.log_level, fmt=settings.effective_log_format)
    # Before create_app: only channels opened after this are instrumented.
    configure_gateway_tracing()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.gateway_host,
        port=settings.gateway_port,
        log_level=settings.log_level.lower(),
        # X-Forwarded-For is honoured only from TRUSTED_PROXIES, by the gateway itself.
        proxy_headers=False,
        # The gateway serves no WebSockets: an upgrade request is plain HTTP to it.
        ws="none",
        access_log=False,
        timeout_graceful_shutdown=int(settings.gateway_shutdown_grace_s),
        timeout_keep_alive=int(settings.gateway_keepalive_timeout),
    )
    _AnnouncingServer(config, app).run()
    shutdown_tracing()


if __name__ == "__main__":
    exit_on_configuration_error(main)
