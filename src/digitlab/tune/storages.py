"""Where tuning studies live: Optuna storages shared by processes and machines.

By default a journal file in the runs folder (Optuna's JournalFileBackend with a lock file;
Optuna advises against SQLite for parallel use); or a database URL such as
postgresql://user@host/db that many machines join. `tune` searches and `tune report` reads
through the same `open_storage`.

A trial whose process died (killed, out of memory, a machine gone) would stay RUNNING for
ever. Each trial records the `host:pid` of its worker; `fail_dead_trials` fails the trials of
a worker its parent saw die, `fail_orphaned_trials` those of vanished processes on this host
when a study is opened, and on a database Optuna's heartbeat fails those of any machine that
stopped beating for `HEARTBEAT_GRACE_S`.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import stat
import time
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import optuna
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage
from optuna.trial import TrialState

from digitlab.errors import DigitlabError, SpecError
from digitlab.files import check_output_folder, what_is
from digitlab.runs import default_runs_dir

DEFAULT_STUDY = "digitlab"
JOURNAL_FILE = "tune.journal"  # in the runs folder: every study of that folder, one log
CONNECT_TIMEOUT_S = 10  # a database that doesn't answer must not hang the command
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts towards --trials
WORKER_ATTR = "worker"  # trial user attribute: host:pid of the process that ran it
FAILURE_ATTR = "failure"  # trial user attribute: why digitlab failed a trial its worker left
# A database storage: each running trial beats every HEARTBEAT_INTERVAL_S; one silent for
# HEARTBEAT_GRACE_S is failed by the next trial any worker starts, or the next `tune` call.
HEARTBEAT_INTERVAL_S = 10
HEARTBEAT_GRACE_S = 60


def quiet_optuna() -> None:
    """Silence Optuna's per-trial log lines: digitlab's live table and summary say it better,
    and a Ctrl-C'd trial is no failure worth a traceback."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def storage_label(storage: str | Path | None, runs_dir: str | Path | None = None) -> str:
    """Where a study lives, fit to print: the journal path, or the URL without its password."""
    if storage is None or "://" not in str(storage):
        return str(journal_path(storage, runs_dir))
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(str(storage)).render_as_string(hide_password=True)
    except (sqlalchemy.exc.ArgumentError, ValueError):  # ValueError: a port that is no number
        return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", str(storage))  # no password shown


def journal_path(storage: str | Path | None, runs_dir: str | Path | None) -> Path:
    if storage is not None:
        return Path(storage)
    return Path(runs_dir if runs_dir is not None else default_runs_dir()) / JOURNAL_FILE


def open_storage(
    storage: str | Path | None = None,
    runs_dir: str | Path | None = None,
    retries: int | None = None,
) -> optuna.storages.BaseStorage:
    """Open the storage a study lives in.

    Args:
        storage: None for the journal file `<runs_dir>/tune.journal`; a path for a journal
            file elsewhere (e.g. on a shared disk); or a database URL with `://`, such as
            `postgresql://user@host/db`, that many machines can reach.
        runs_dir: the runs folder (default `$DIGITLAB_RUNS_DIR` or `./runs`).
        retries: on a database, a trial whose heartbeat stopped is enqueued again this many
            times at most (Optuna's `RetryHeartbeatStaleTrialCallback`; None: never).

    Raises:
        SpecError: the journal file holds something else than Optuna's journal; it is left
            untouched.
        DigitlabError: the journal file cannot be read, or the database cannot be reached,
            its URL is malformed or its driver is missing.
    """
    if storage is None or "://" not in str(storage):
        return _open_journal(journal_path(storage, runs_dir))

    import sqlalchemy

    url, label = _database_url(str(storage)), storage_label(storage)
    try:
        sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise DigitlabError(
            f"the storage URL {label} is malformed ({exc}); "
            "write it like postgresql://user@host:5432/db"
        ) from None
    try:
        return _database(url, retries)
    except ImportError as exc:
        driver = getattr(exc.__cause__, "name", None) or exc.name or "its driver"
        raise DigitlabError(
            f"the storage {label} needs the database driver '{driver}', which is not "
            "installed (for PostgreSQL: pip install 'digitlab[postgres]')"
        ) from None
    except sqlalchemy.exc.NoSuchModuleError:
        raise DigitlabError(
            f"unknown kind of database in {label}; use e.g. postgresql://user@host/db"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DigitlabError(
            f"cannot open the study storage {label}: {reason}; "
            "check the URL and that the database server is running and reachable"
        ) from None


CREATE_ATTEMPTS = 4  # opening a new database: the tables' creation may race another worker


def _database(url: str, retries: int | None) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage with digitlab's heartbeat, and its retry of silent trials."""
    import sqlalchemy

    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    retry = None
    with warnings.catch_warnings():  # the heartbeat is "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if retries is not None:
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=retries)
        for attempt in range(CREATE_ATTEMPTS):
            try:
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_INTERVAL_S,
                    grace_period=HEARTBEAT_GRACE_S,
                    heartbeat_stale_trial_callback=retry,
                )
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                # Workers started together on a new database race to create Optuna's tables
                # ("duplicate key ... pg_type_typname_nsp_index"): the loser finds them made.
                if attempt == CREATE_ATTEMPTS - 1:
                    raise
                time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def journal_exists(path: Path) -> bool:
    """Whether a journal file is at `path` (False: nothing yet), looked at without opening it.

    Raises:
        SpecError: a folder, a FIFO, a device or a socket is there (or a link to one); reading
            a FIFO would wait for ever for a writer.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    except OSError:  # e.g. no permission: opening it says why
        return True
    except ValueError:  # a NUL byte: no such file
        return False
    if not stat.S_ISREG(mode):
        raise SpecError(
            f"{what_is(path, mode)}, not an Optuna journal file; "
            "pass another --storage or move it away"
        )
    return True


def _open_journal(path: Path) -> optuna.storages.BaseStorage:
    """A journal file, checked before anything is appended to it: a file that is not a
    journal (a typo in --storage, a SQLite file) is refused, not written into, and a last line
    that a kill cut off is dropped."""

    def refuse(reason: str) -> SpecError:
        return SpecError(
            f"{path} is not an Optuna journal file: {reason}; "
            "pass another --storage or move it away"
        )

    try:
        check_output_folder(path.parent, DigitlabError)  # a FIFO or a device there: named
        if journal_exists(path):
            _check_first_line(path, refuse)
            _drop_cut_off_line(path, JournalFileOpenLock(str(path)), refuse)
        path.parent.mkdir(parents=True, exist_ok=True)
        # An O_EXCL lock file next to the journal: safe for processes on one machine and
        # on NFSv3+; a lock left by a killed process is broken after 30 s.
        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        return JournalStorage(backend)  # reads and replays the whole log
    except OSError as exc:
        raise DigitlabError(
            f"cannot open the journal file {path}: {exc.strerror or exc}; "
            "check the --storage path and its permissions"
        ) from None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, AssertionError) as exc:
        # what Optuna's replay raises on a line it cannot read
        detail = " ".join(str(exc).split())[:120]
        raise refuse(f"a log entry it cannot read ({type(exc).__name__} {detail})") from None


def _check_first_line(path: Path, refuse: Callable[[str], SpecError]) -> None:
    """Every log line is a JSON object with an op_code; the first one may still be being
    written by another process, so only a complete line is parsed."""
    with path.open("rb") as file:
        first = file.readline(1 << 20)
    if first and not first.lstrip().startswith(b"{"):
        raise refuse("its first line is not a JSON log entry")
    if first.endswith(b"\n"):
        try:
            entry = json.loads(first)
        except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
            raise refuse("its first line is not JSON") from None
        if not isinstance(entry, dict) or "op_code" not in entry:
            raise refuse("its first line has no op_code")


def _drop_cut_off_line(
    path: Path, lock: JournalFileOpenLock, refuse: Callable[[str], SpecError]
) -> None:
    """Drop the journal's last line if a kill cut it off in the middle of a write.

    Optuna writes each entry with its newline while it holds the journal's lock, so a last
    line without one was cut off. Optuna's reader skips it, but the next entry would be
    appended to it, and that line, unreadable, would fail every later read. It is cut off
    here, under the same lock so as not to race a writer; every complete line is kept. A
    read-only journal is left as it is (it is read the same, and nothing is appended).
    """
    with path.open("rb") as file:
        if _cut_off_line(file) is None:
            return
    try:
        file = path.open("r+b")
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return
        raise
    with file:
        lock.acquire()
        try:
            start = _cut_off_line(file)  # again: under the lock
            if start is None:
                return
            file.seek(start)
            if file.read(1) != b"{":
                raise refuse("its last line, without a newline, is not a JSON log entry")
            file.truncate(start)
            file.flush()
            os.fsync(file.fileno())
        finally:
            lock.release()


def _cut_off_line(file: BinaryIO) -> int | None:
    """Where the file's last line starts if it ends without a newline; None if it does."""
    end = position = file.seek(0, os.SEEK_END)
    while position > 0:
        size = min(1 << 16, position)
        file.seek(position - size)
        block = file.read(size)
        newline = block.rfind(b"\n")
        if position == end and newline == size - 1:
            return None
        if newline >= 0:
            return position - size + newline + 1
        position -= size
    return 0 if end else None


def fail_dead_trials(study: optuna.Study, worker: str, reason: str) -> list[int]:
    """Fail the RUNNING trials of `worker` (`host:pid`), a process known to be dead.

    Returns the numbers of the trials failed; `reason` is kept as their `failure` attribute.
    """
    numbers = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get(WORKER_ATTR) == worker:
            try:
                study._storage.set_trial_user_attr(trial._trial_id, FAILURE_ATTR, reason)
                study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:  # it finished meanwhile
                continue
            numbers.append(trial.number)
    return numbers


def fail_orphaned_trials(study: optuna.Study) -> list[int]:
    """Fail RUNNING trials whose worker is gone: a process of this host that no longer runs,
    or (database storages) a trial of any host whose heartbeat stopped.

    Returns the numbers of the trials failed.
    """
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # nothing to do without a heartbeat
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker_host, _, pid = str(trial.user_attrs.get(WORKER_ATTR, "")).rpartition(":")
        gone = pid.isdigit() and not process_alive(int(pid), since=trial.datetime_start)
        if worker_host == host and gone:
            fail_dead_trials(study, f"{host}:{pid}", "its worker process ended")
    after = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    return sorted(n for n in before if after[n] == TrialState.FAIL)


def process_alive(pid: int, since: datetime | None = None) -> bool:
    """Whether process `pid` of this host runs; on Linux a zombie counts as dead, and so does
    a process started after `since` (the pid was reused)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
        state, ticks = stat[0], int(stat[19])  # fields 3 and 22: state, starttime
    except (OSError, StopIteration, IndexError, ValueError):  # not Linux
        return True
    if state in ("Z", "X"):  # zombie or dead
        return False
    started = boot + ticks / os.sysconf("SC_CLK_TCK")
    return since is None or started <= since.timestamp() + 1  # btime has 1 s resolution


def _database_url(url: str) -> str:
    """`postgresql://` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only it is here."""
    import importlib.util

    find = importlib.util.find_spec
    if url.startswith("postgresql://") and find("psycopg") is None and find("psycopg2"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url
