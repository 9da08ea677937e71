"""`digitlab board` and `digitlab tune dashboard`: TensorBoard and optuna-dashboard, launched.

Both are the tools themselves, from optional extras: TensorBoard (`pip install
'digitlab[board]'`) on the runs of a runs folder and of its experiments, each holding
`tensorboard/` event files (see `digitlab.events`) and named as `digitlab runs` names them;
optuna-dashboard (`pip install 'digitlab[dashboard]'`) on a study's
storage, opened as `digitlab tune` opens it (`studies.open_storage`: the journal file with
its lock, or a database URL). Both serve on 127.0.0.1 by default; the URL is returned only
once the port is bound, and a port in use is one clear error naming a free one (`ports`, as
for `digitlab serve`).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import shutil
import socketserver
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from digitlab import ports
from digitlab.errors import DigitlabError
from digitlab.files import is_dir, kind_of
from digitlab.runs import (
    EVENTS_DIR,
    EXPERIMENT_RUNS_FOLDER,
    default_runs_dir,
    experiment_folders,
    has_config,
    run_ref,
)

DEFAULT_HOST = "127.0.0.1"
TENSORBOARD_PORT = 6006  # TensorBoard's own default
DASHBOARD_PORT = 8080  # optuna-dashboard's own default
LOGDIR_PREFIX = "digitlab-board-"  # TensorBoard's logdir of links, in $TMPDIR: <prefix><pid>-*


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


def board_runs(runs_dir: str | Path) -> dict[str, Path]:
    """Every run TensorBoard can show, by the name commands take (`runs.run_ref`: an
    experiment's run by its own name, or EXPERIMENT/RUN) → its `tensorboard/` folder: the
    runs folder's own runs, then each experiment's, in name order."""
    runs_dir = Path(runs_dir)
    parents = [runs_dir, *(f / EXPERIMENT_RUNS_FOLDER for f in experiment_folders(runs_dir))]
    found = {}
    for parent in parents:
        try:
            folders = sorted(parent.iterdir())
        except OSError as exc:
            raise DigitlabError(f"cannot list {parent}: {exc.strerror or exc}") from None
        for run in folders:
            events = run / EVENTS_DIR
            if not run.name.startswith(".") and has_config(run) and is_dir(events):
                found[run_ref(run, runs_dir)] = events
    return found


def link_runs(runs: dict[str, Path], folder: Path) -> list[str]:
    """Lay out `folder` as TensorBoard's logdir: a symlink per run, at the run's name, to
    its `tensorboard/` folder, for TensorBoard names a run by its path under the logdir.
    (Its `--logdir_spec name:path` would call a run `name/.`: the name joined with the
    path of the event files relative to `path`.)

    Returns:
        The names left out: one whose place is another run's link, e.g. a run named like
        an experiment's folder when a run of that experiment is named EXPERIMENT/RUN.
    """
    left_out = []
    for name, events in runs.items():
        link = folder / name
        try:
            if any((folder / up).is_symlink() for up in Path(name).parents):  # never in a run
                raise FileExistsError
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(events.resolve(), target_is_directory=True)
        except (FileExistsError, NotADirectoryError):
            left_out.append(name)
    return left_out


def remove_stale_logdirs() -> None:
    """Remove the link folders (`link_runs`) of board processes that are gone: one killed
    (SIGTERM, kill -9) runs no exit handler. Removing one removes links, never what they
    point to."""
    for folder in Path(tempfile.gettempdir()).glob(f"{LOGDIR_PREFIX}*-*"):
        pid = folder.name.removeprefix(LOGDIR_PREFIX).split("-")[0]
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except (ValueError, OSError):  # not ours, or another user's process
            continue


def start_tensorboard(
    runs_dir: str | Path | None = None,
    *,
    host: str = DEFAULT_HOST,
    port: int = TENSORBOARD_PORT,
    on_skipped: Callable[[str], Any] | None = None,
) -> str:
    """Start TensorBoard on `runs_dir` in this process (it serves from background threads)
    and return its URL, once it listens. Every run with a `tensorboard/` folder, the
    experiments' too, is a run in its run selector, by the name `digitlab runs` shows
    (`board_runs`, laid out by `link_runs` in a temporary folder removed at exit); runs
    trained after it starts show once it is started again.

    Args:
        on_skipped: called with one line per run TensorBoard can't show (`skipped_runs`,
            and a name `link_runs` leaves out), before it starts; `digitlab board` prints
            them.

    Raises:
        DigitlabError: TensorBoard is not installed, `runs_dir` is not a folder or holds
            no run to show, or the port is in use.
    """
    _require("tensorboard.program", "TensorBoard", "board")
    from tensorboard import program

    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not runs_dir.is_dir():
        raise DigitlabError(
            f"no runs folder {runs_dir}; train a run with `digitlab train` or pass RUNS_DIR"
        )
    ports.check_free(host, port)
    say = on_skipped if on_skipped is not None else (lambda line: None)
    for run, events in skipped_runs(runs_dir) if on_skipped is not None else ():
        with contextlib.suppress(OSError):  # gone since the walk: nothing to say
            kind = kind_of(os.stat(events).st_mode)
            name = run_ref(run, runs_dir)
            say(f"skipped {name}: its {events.name} is {kind}, not a folder of event files")
    runs = board_runs(runs_dir)
    if not runs:
        raise DigitlabError(
            f"no runs with TensorBoard event files in {runs_dir}; train one with "
            "`digitlab train`, then start the board"
        )
    remove_stale_logdirs()
    logdir = Path(tempfile.mkdtemp(prefix=f"{LOGDIR_PREFIX}{os.getpid()}-"))
    atexit.register(shutil.rmtree, logdir, ignore_errors=True)  # only links: nothing to lose
    for name in link_runs(runs, logdir):
        say(f"skipped {name}: another run's name is the start of its name")
    board = program.TensorBoard()
    board.configure(logdir=str(logdir), host=host, port=port)
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
