"""Serving the app: bind the port first (`ports.bind_port`, shared with `board` and `tune
dashboard`), so a taken one is one clear line before anything is loaded, then hand the bound
socket to uvicorn."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from digitlab.api.app import create_app
from digitlab.ports import bind_port
from digitlab.runs import Run


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
