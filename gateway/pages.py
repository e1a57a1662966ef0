"""The gateway's fixed endpoints: health, readiness, the OpenAPI document, the pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import GatewayError, error_response
from gateway.handler import Gateway
from gateway.observability import set_route_template

STATIC_DIR = Path(__file__).parent / "static"

_CODE_BY_HTTP_STATUS = {
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    400: grpc.StatusCode.INVALID_ARGUMENT,
}


async def healthz(request: Request) -> Response:
    set_route_template(request.scope, "/healthz")
    return JSONResponse({"status": "ok"})


def readyz(gateway: Gateway) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        set_route_template(request.scope, "/readyz")
        # Ready or not, nothing else: addresses and upstream statuses are on the metrics port.
        if await gateway.ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "not ready"}, status_code=503)

    return endpoint


def openapi(gateway: Gateway) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        set_route_template(request.scope, "/openapi.json")
        return JSONResponse(gateway.openapi)

    return endpoint


def static_page(name: str, template: str) -> Callable[[Request], Awaitable[Response]]:
    path = STATIC_DIR / name

    async def page(request: Request) -> Response:
        set_route_template(request.scope, template)
        return FileResponse(path, headers={"cache-control": "no-cache"})

    return page


def relative_redirect(target: str, template: str) -> Callable[[Request], Awaitable[Response]]:
    """`/docs/` -> `/docs`. A relative Location: Starlette's slash redirect built an absolute URL
    from the Host header, so anyone could make the gateway redirect to a host of their choosing."""

    async def redirect(request: Request) -> Response:
        set_route_template(request.scope, template)
        return RedirectResponse(target, status_code=308)

    return redirect


class Labelled:
    """Gives a fixed endpoint its metrics label before it runs."""

    def __init__(self, template: str, app: ASGIApp) -> None:
        self.template = template
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        set_route_template(scope, self.template)
        await self.app(scope, receive, send)


async def http_exception_as_status(request: Request, exc: Exception) -> Response:
    """Starlette's own 404/405 (fixed routes, static files) in the same Status shape as the API."""
    assert isinstance(exc, HTTPException)
    code = _CODE_BY_HTTP_STATUS.get(exc.status_code, grpc.StatusCode.UNKNOWN)
    return error_response(
        GatewayError(code, str(exc.detail), http_status=exc.status_code, headers=dict(exc.headers or {}))
    )
