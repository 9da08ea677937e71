"""`digitlab board` and `digitlab tune dashboard`: TensorBoard and optuna-dashboard, launched.

Both are the tools themselves, from optional extras: TensorBoard (`pip install
'digitlab[board]'`) on the runs folder, whose runs each hold `tensorboard/` event files
(see `digitlab.events`); optuna-dashboard (`pip install 'digitlab[dashboard]'`) on a study's
storage, opened as `digitlab tune` opens it (`studies.open_storage`: the journal file with
its lock, or a database URL). Both serve on 127.0.0.1 by default; the URL is returned only
once the port is bound, and a port in use is one clear error naming a free one (`ports`, as
for `digitlab serve`).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socketserver
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from digitlab import ports
from digitlab.errors import DigitlabError
from digitlab.files import kind_of
from digitlab.runs import EVENTS_DIR, default_runs_dir

DEFAULT_HOST = "127.0.0.1"
TENSORBOARD_PORT = 6006  # TensorBoard's own default
DASHBOARD_PORT = 8080  # optuna-dashboard's own default


def _require(module: str, tool: str, extra: str) -> None:
    """Import `module`, or say in one line how to install the extra that brings it."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise DigitlabError(f"{tool} is not installed; pip install 'digitlab[{extra}]'") from None


# ---------------------------------------------------------------------------- TensorBoard
def skipped_runs(runs_dir: str | Path) -> list[tuple[Path, Path]]:
    """The runs under `runs_dir` TensorBoard can't show, each as (run folder, its
    `tensorboard` entry): that entry is a file, a FIFO or a socket, not a folder of event
    files. TensorBoard itself passes over them without a word."""

    skipped = []
    for folder, subfolders, files in os.walk(runs_dir):
        subfolders[:] = sorted(d for d in subfolders if d != EVENTS_DIR and not d.startswith("."))
        if EVENTS_DIR in files:  # os.walk lists everything that is not a folder as a file
            skipped.append((Path(folder), Path(folder) / EVENTS_DIR))
    return sorted(skipped)


def start_tensorboard(
    runs_dir: str | Path | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = TENSORBOARD_PORT,
    on_skipped: Callable[[str], Any] | None = None,
) -> str:
    """Start TensorBoard on `runs_dir` in this process (it serves from background threads)
    and return its URL, once it listens. Every run folder with a `tensorboard/` folder is a
    run in its run selector; TensorBoard rescans the folder every few seconds.

    Args:
        on_skipped: called with one line per run TensorBoard can't show (`skipped_runs`),
            before it starts; `digitlab board` prints them.

    Raises:
        DigitlabError: TensorBoard is not installed, `runs_dir` is not a folder, or the port
            is in use.
    """
    _require("tensorboard.program", "TensorBoard", "board")
    from tensorboard import program

    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not runs_dir.is_dir():
        raise DigitlabError(
            f"no runs folder {runs_dir}; train a run with `digitlab train` or pass RUNS_DIR"
        )
    ports.check_free(host, port)
    for run, events in skipped_runs(runs_dir) if on_skipped is not None else ():
        with contextlib.suppress(OSError):  # gone since the walk: nothing to say
            kind = kind_of(os.stat(events).st_mode)
            name = run.relative_to(runs_dir)
            on_skipped(f"skipped {name}: its {events.name} is {kind}, not a folder of event files")
    board = program.TensorBoard()
    board.configure(logdir=str(runs_dir.resolve()), host=host, port=port)
    try:
        return board.launch()
    except program.TensorBoardPortInUseError:  # taken between the check and the bind
        raise ports.in_use(host, port) from None
    except program.TensorBoardServerException as exc:
        raise DigitlabError(f"TensorBoard could not start: {exc.msg}") from None


# ------------------------------------------------------------------------ optuna-dashboard
class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # no line per request
        pass


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # the page's parallel requests; none outlives Ctrl-C


def start_dashboard(
    study: str,
    *,
    storage: str | Path | None = None,
    runs_dir: str | Path | None = None,
    host: str = DEFAULT_HOST,
    port: int = DASHBOARD_PORT,
) -> tuple[WSGIServer, str]:
    """Bind optuna-dashboard to `host:port` on the storage holding `study`.

    Args:
        study: the study's name; it must exist in the storage.
        storage: as for `digitlab tune`: None for `<runs_dir>/tune.journal`, a journal file
            path, or a database URL such as postgresql://user@host/db.
        runs_dir: the runs folder of the default journal file.

    Returns:
        The server, bound but not yet serving (call `serve_forever`, e.g. in a thread), and
        the URL of the study's page.

    Raises:
        DigitlabError: optuna-dashboard is not installed, the storage cannot be opened, the
            study is not in it, or the port is in use.
    """
    _require("optuna_dashboard", "optuna-dashboard", "dashboard")
    import optuna_dashboard

    from digitlab.tune.storages import journal_exists, journal_path, open_storage, storage_label

    label = storage_label(storage, runs_dir)
    if "://" not in str(storage) and not journal_exists(journal_path(storage, runs_dir)):
        raise DigitlabError(
            f"no study storage at {label}; run `digitlab tune --study {study}` first, "
            "or pass the --storage it used"
        )
    opened = open_storage(storage, runs_dir)
    names = sorted(s.study_name for s in opened.get_all_studies())
    if study not in names:
        listed = ", ".join(names) if names else "none"
        raise DigitlabError(f"no study '{study}' in {label} (studies there: {listed})")
    app = optuna_dashboard.wsgi(opened)
    ports.check_free(host, port)  # a port out of range, or a bad host, is one line too
    try:
        server = make_server(
            host, port, app, server_class=_ThreadingServer, handler_class=_QuietHandler
        )
    except OSError as exc:  # taken between the check and the bind, say
        raise ports.listen_error(exc, host, port) from None
    study_id = opened.get_study_id_from_name(study)
    return server, f"http://{host}:{port}/dashboard/studies/{study_id}"


def wait_for_interrupt() -> None:
    """Block until Ctrl-C (the servers run in background threads).

    Short sleeps: a SIGINT that the kernel hands to a server thread only sets a flag, which
    the main thread sees when its sleep ends."""
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        return
