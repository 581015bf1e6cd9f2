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
from gateway.web import probe_port
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
                  docs_url=None, redoc_url=None, redirect_slashes=False)

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


class _UnlessHalted:
    """503 to every HTTP request once the gateway has halted (a batch's fsync failed
    after it ran): the engine then holds what the journal may not, and the portal, which
    reads the engine, shows none of it while the exchange stops."""

    def __init__(self, app: Any, portal: WebPortal) -> None:
        self.app = app
        self.portal = portal

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.portal.core.halted:
            return await self.app(scope, receive, send)
        body = b"the exchange is stopping: its journal could not be written\n"
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


async def serve_web(portal: WebPortal, *, port: int, host: str = "127.0.0.1",
                    stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
    """Serve *portal* on *host*:*port* until *stop* is set."""
    import uvicorn

    probe_port(host, port)  # OSError (taken, not an address here) before uvicorn starts
    config = uvicorn.Config(_UnlessHalted(_HeadAsGet(portal.app), portal), host=host,
                            port=port, log_level="warning", access_log=False, lifespan="on",
                            loop="none", http=_guarded_protocol())
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


# A request's head (its request line and headers) must come whole within these, and the
# portal holds at most so many connections: it shares the exchange's event loop, and one
# endless header line stalled trading for seconds (100 MB: 14 s), slow heads held sockets
# for good (until no bot could connect).
MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 512


def _guarded_protocol() -> type:
    """uvicorn's HTTP protocol, refusing a request head over ``MAX_HEAD_BYTES`` (431),
    closing a connection whose head has not come whole within ``HEAD_TIMEOUT_S``, and
    any connection past ``MAX_CONNECTIONS``."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class Guarded(HttpToolsProtocol):
        _head_bytes = 0
        _in_head = True
        _head_timer: asyncio.TimerHandle | None = None
        _discarding = False

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > MAX_CONNECTIONS:
                transport.close()
                return
            self._wait_for_head()

        def _wait_for_head(self) -> None:
            self._in_head, self._head_bytes = True, 0
            self._stop_head_timer()
            self._head_timer = self.loop.call_later(HEAD_TIMEOUT_S, self._head_too_slow)

        def _stop_head_timer(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_too_slow(self) -> None:
            self._head_timer = None
            if self._in_head and not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            if self._discarding:
                return  # after a 431: the rest of the head, read and dropped unparsed
            if self._in_head:
                # One read may bring 256 KiB: the head is counted as it comes, and only
                # MAX_HEAD_BYTES of it reach the parser (which may end the head in them).
                room = MAX_HEAD_BYTES - self._head_bytes
                if len(data) > room:
                    if room > 0:
                        self._head_bytes = MAX_HEAD_BYTES
                        super().data_received(data[:room])
                        if self.transport.is_closing():
                            return  # the parser refused it (400)
                    if self._in_head:  # the head is not whole yet
                        self._refuse_head()
                        return
                    data = data[room:]  # a body, or the next request, after a head in time
                else:
                    self._head_bytes += len(data)
            super().data_received(data)

        def _refuse_head(self) -> None:
            message = b"request head too large"
            self.transport.write(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                 b"content-type: text/plain; charset=utf-8\r\n"
                                 b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                                 % (len(message), message))
            # Closed at once with the client still sending, the connection would be
            # reset and the answer lost: the rest is read and dropped for a second.
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self._discarding, self._in_head = True, False
            self.loop.call_later(1.0, self.transport.close)

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._stop_head_timer()
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._wait_for_head()  # the next request on this connection

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_head_timer()
            super().connection_lost(exc)

    return Guarded


def storage_secret() -> str:
    return secrets.token_hex(16)
