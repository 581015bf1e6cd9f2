"""The web portal: a REST API under ``/api/v1`` and live pages (market, account,
registry), served by ``carbonx serve --web PORT`` and ``carbonx demo --web PORT`` from
the gateway's own process, reading the exchange's own state."""

from __future__ import annotations

import socket

__all__ = ["probe_port"]


def probe_port(host: str, port: int) -> None:
    """Bind *host*:*port* and let it go, as uvicorn will bind it: ``OSError`` when the
    port is taken or the address is not this machine's. Called before anything is written
    (journal, credentials), so that a portal that cannot listen leaves nothing behind."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        # As uvicorn binds: a port whose last connections wait out TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
