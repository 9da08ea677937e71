"""Serving the app: bind the port first (`bind_port`), so a taken one is one clear line before
anything is loaded, then `run_server` hands the bound socket to uvicorn."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from digitlab.api.app import create_app
from digitlab.errors import DigitlabError
from digitlab.runs import Run


def check_port(port: int) -> int:
    """`port` if it is a TCP port, 1–65535 (0, "any free port", is not offered).

    Raises:
        DigitlabError: out of range; uvicorn would otherwise bind another port or fail later.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise DigitlabError(f"--port must be a TCP port between 1 and 65535, got {port}")
    return port


def _bound(host: str, port: int) -> socket.socket | None:
    """A TCP socket bound to (host, port), or None when the port is in use."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise DigitlabError(
            f"--host {host} is not an address here ({reason}); e.g. 127.0.0.1"
        ) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is fine
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            return None
        raise DigitlabError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def bind_port(host: str, port: int) -> socket.socket:
    """Bind (host, port) before anything is served, so a taken port is one clear line.

    Raises:
        DigitlabError: `port` is not 1–65535, the port is in use (the message names a free
            one nearby: `port 8000 is in use; try --port 8001`), or the address is unusable.
    """
    check_port(port)
    sock = _bound(host, port)
    if sock is not None:
        return sock
    for other in range(port + 1, min(port + 100, 65535) + 1):
        probe = _bound(host, other)
        if probe is not None:
            probe.close()
            raise DigitlabError(f"port {port} is in use; try --port {other}")
    raise DigitlabError(f"port {port} is in use; try another --port")


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
        if on_listening is not None:
            shown = f"[{host}]" if ":" in host else host
            on_listening(f"http://{shown}:{port}")
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
