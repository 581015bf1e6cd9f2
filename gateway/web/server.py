"""The web portal's server: one FastAPI app (the REST API under ``/api/v1``, the live
pages at ``/``) run by uvicorn inside the gateway's own event loop, on 127.0.0.1 unless
told otherwise, reading the exchange through its ``GatewayCore``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI

from gateway.mqtt.service import GatewayCore
from gateway.web.auth import Credentials
from gateway.web.view import MarketView

__all__ = ["create_app", "serve_web", "WebPortal"]

log = logging.getLogger("carbonx.web")


class WebPortal:
    """The app and what it reads: the core, the view kept from its events, the logins."""

    def __init__(self, core: GatewayCore, passwords: Mapping[str, str]) -> None:
        self.core = core
        self.view = MarketView(core.engine)
        core.watchers.append(self.view.on_events)
        self.credentials = Credentials(passwords)
        self.app = create_app(self)


def create_app(portal: WebPortal) -> FastAPI:
    """The FastAPI app of *portal*: the API's routes, then the pages."""
    from fastapi.responses import HTMLResponse

    from gateway.web.api import make_router
    from gateway.web.apidoc import api_reference
    from gateway.web.pages import register_pages

    app = FastAPI(title="carbonx", version="1", openapi_url="/api/v1/openapi.json",
                  docs_url=None, redoc_url=None)

    @app.get("/api/v1/docs", include_in_schema=False)
    async def api_docs() -> HTMLResponse:
        # FastAPI's page loads Swagger UI from a CDN: blank without the internet.
        return HTMLResponse(api_reference(app.openapi()))

    app.include_router(make_router(portal))
    register_pages(app, portal)
    return app


class _HeadAsGet:
    """HEAD on the REST API answered as its GET, without the body (RFC 9110: a server
    answers HEAD wherever it answers GET). FastAPI's routes take only the methods they
    name; the pages' routes take HEAD already."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or scope["method"] != "HEAD"
                or not scope["path"].startswith("/api/")):
            return await self.app(scope, receive, send)

        async def headless(message: Any) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        return await self.app({**scope, "method": "GET"}, receive, headless)


async def serve_web(portal: WebPortal, *, port: int, host: str = "127.0.0.1",
                    stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Serve *portal* on *host*:*port* until *stop* is set."""
    import socket

    import uvicorn

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, port))  # OSError (taken, not an address here) before uvicorn starts
    config = uvicorn.Config(_HeadAsGet(portal.app), host=host, port=port, log_level="warning",
                            access_log=False, lifespan="on", loop="none")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]  # ours
    task = asyncio.ensure_future(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.02)
    if task.done():
        task.result()  # raise what stopped it (the port taken...)
        return
    log.info("web portal on http://%s:%d/", host, port)
    if ready is not None:
        ready.set()
    with contextlib.suppress(asyncio.CancelledError):
        await stop.wait()
    server.should_exit = True
    await task


def storage_secret() -> str:
    return secrets.token_hex(16)
