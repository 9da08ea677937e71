"""Serving the app: bind the port first (`ports.bind_port`, shared with `board` and `tune
dashboard`), so a taken one is one clear line before anything is loaded, then hand the bound
socket to uvicorn, with a deadline for each request's headers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from digitlab.api.app import create_app
from digitlab.ports import bind_port
from digitlab.runs import Run

# Seconds a client has to send a request's headers, from when it connects or its previous
# response ends: a slow client ("slowloris") holding connections open is cut off after at
# most twice this (the check runs every HEADER_TIMEOUT seconds). uvicorn has no such
# timeout: its keep-alive timer stops at the first byte of a request.
HEADER_TIMEOUT = 10.0
KEEP_ALIVE_TIMEOUT = 5  # seconds an idle connection stays open after a response
SHUTDOWN_TIMEOUT = 10  # seconds Ctrl-C waits for requests in flight
BACKLOG = 2048  # connections waiting to be accepted (uvicorn's own default)
MAX_HEADER_BYTES = 16 * 1024  # h11's header limit (httptools, when installed, has its own)


def run_server(
    run_ref: str | Path | Run,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    on_listening: Callable[[str], Any] | None = None,
) -> None:
    """Serve `run_ref` with uvicorn until interrupted; loopback only unless `host` says so.

    The port is bound first (`bind_port`); `on_listening(url)` is called once it is, before
    serving, so nothing announces a server that could not start.

    Raises:
        DigitlabError: `port` is not 1–65535 or is in use (checked before anything is loaded).
    """
    import uvicorn

    sock = bind_port(host, port)
    try:
        app = create_app(run_ref)
        # Listening before the URL is announced: a client that connects at once (a browser
        # opened by the announcement) waits in the backlog while the model loads, instead of
        # being refused.
        sock.listen(BACKLOG)
        if on_listening is not None:
            shown = f"[{host}]" if ":" in host else host
            on_listening(f"http://{shown}:{port}")
        uvicorn.Server(server_config(app, host, port, log_level)).run(sockets=[sock])
    finally:
        sock.close()


def server_config(app: Any, host: str, port: int, log_level: str, *, http: str = "auto"):
    """uvicorn's `Config` for `app`, with bounded timeouts: headers (`HEADER_TIMEOUT`), an
    idle connection, and shutdown. `http` is uvicorn's protocol: auto, h11 or httptools."""
    import uvicorn
    from uvicorn.config import HTTP_PROTOCOLS
    from uvicorn.importer import import_from_string

    protocol = _with_header_deadline(import_from_string(HTTP_PROTOCOLS[http]))
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=protocol,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
        timeout_graceful_shutdown=SHUTDOWN_TIMEOUT,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
    )


def _with_header_deadline(protocol: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol class, closing a connection on which no request's headers
    arrived within `HEADER_TIMEOUT` while none was being answered.

    Both of uvicorn's HTTP/1.1 protocols (h11, httptools) start a new `cycle` when a
    request's headers are complete, and mark it `response_complete` when answered: a
    connection whose cycle is the same, finished one (or still none) a whole period later
    is waiting for headers that don't come.
    """

    class HeaderDeadline(protocol):  # type: ignore[valid-type, misc]
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._deadline = self.loop.call_later(HEADER_TIMEOUT, self._check, None)

        def connection_lost(self, exc) -> None:
            self._deadline.cancel()
            super().connection_lost(exc)

        def _check(self, seen) -> None:
            if self.transport.is_closing():
                return
            if self.cycle is seen and (seen is None or seen.response_complete):
                self.transport.close()  # no new request's headers for a whole period
                return
            self._deadline = self.loop.call_later(HEADER_TIMEOUT, self._check, self.cycle)

    HeaderDeadline.__name__ = HeaderDeadline.__qualname__ = f"HeaderDeadline{protocol.__name__}"
    return HeaderDeadline
