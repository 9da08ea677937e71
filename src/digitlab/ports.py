"""TCP ports for the servers (`serve`, `board`, `tune dashboard`): the one place a port is
bound, or refused in one line that says why and, when it is taken, names a free one nearby.

The CLI's `--port` options bound the number (Typer's `min=1, max=65535`); a library caller
passing another number gets the same one-line refusal here instead of a traceback.
"""

from __future__ import annotations

import errno
import socket

from digitlab.errors import DigitlabError

LAST_PORT = 65535
NEARBY = 100  # ports after a taken one that are tried for the suggestion


def bind_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening. Bind before anything is loaded
    or announced, so that a port that cannot be used is one clear line.

    Raises:
        DigitlabError: `port` is not 1–65535, the port is in use (the message names a free
            one nearby: `port 8000 is in use; try --port 8001`), or the address is unusable.
    """
    sock = _bind(host, port)
    if sock is None:
        raise in_use(host, port)
    return sock


def check_free(host: str, port: int) -> None:
    """Raise `bind_port`'s error unless (host, port) can be bound now: for a server that binds
    the port itself (TensorBoard, wsgiref)."""
    bind_port(host, port).close()


def in_use(host: str, port: int) -> DigitlabError:
    """The error for a taken port, naming the next free one within `NEARBY`."""
    for other in range(port + 1, min(port + NEARBY, LAST_PORT) + 1):
        probe = _bind(host, other)
        if probe is not None:
            probe.close()
            return DigitlabError(f"port {port} is in use; try --port {other}")
    return DigitlabError(f"port {port} is in use; try another --port")


def listen_error(exc: OSError, host: str, port: int) -> DigitlabError:
    """A server's own failure to bind (host, port), as one line: in use, or why not."""
    if exc.errno == errno.EADDRINUSE:
        return in_use(host, port)
    return DigitlabError(f"cannot listen on {host}:{port}: {exc.strerror or exc}")


def _bind(host: str, port: int) -> socket.socket | None:
    """A TCP socket bound to (host, port), or None when the port is in use."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= LAST_PORT:
        # 0 would bind "any free port", and the URL announced would be wrong
        raise DigitlabError(f"--port must be a TCP port between 1 and {LAST_PORT}, got {port}")
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise DigitlabError(
            f"--host {host} is not an address here ({reason}); e.g. 127.0.0.1"
        ) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers: TIME_WAIT is fine
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            return None
        raise listen_error(exc, host, port) from None
    return sock
