"""Where tuning studies live: Optuna storages shared by processes and machines.

By default a journal file in the runs folder (Optuna's JournalFileBackend with a lock file;
Optuna advises against SQLite for parallel use); or a database URL such as
postgresql://user@host/db that many machines join. `tune` searches and `tune_report` reads
through the same `open_storage`.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from digitlab.errors import DigitlabError
from digitlab.runs import default_runs_dir

DEFAULT_STUDY = "digitlab"
JOURNAL_FILE = "tune.journal"  # in the runs folder: every study of that folder, one log
CONNECT_TIMEOUT_S = 10  # a database that doesn't answer must not hang the command
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts towards --trials


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
    except sqlalchemy.exc.ArgumentError:
        return str(storage).split("@")[-1]


def journal_path(storage: str | Path | None, runs_dir: str | Path | None) -> Path:
    if storage is not None:
        return Path(storage)
    return Path(runs_dir if runs_dir is not None else default_runs_dir()) / JOURNAL_FILE


def open_storage(
    storage: str | Path | None = None, runs_dir: str | Path | None = None
) -> optuna.storages.BaseStorage:
    """Open the storage a study lives in.

    Args:
        storage: None for the journal file `<runs_dir>/tune.journal`; a path for a journal
            file elsewhere (e.g. on a shared disk); or a database URL with `://`, such as
            `postgresql://user@host/db`, that many machines can reach.
        runs_dir: the runs folder (default `$DIGITLAB_RUNS_DIR` or `./runs`).

    Raises:
        DigitlabError: the database cannot be reached or its driver is missing.
    """
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    if storage is None or "://" not in str(storage):
        path = journal_path(storage, runs_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        # An O_EXCL lock file next to the journal: safe for processes on one machine and
        # on NFSv3+; a lock left by a killed process is broken after 30 s.
        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        return JournalStorage(backend)

    import sqlalchemy

    url, label = _database_url(str(storage)), storage_label(storage)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
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


def _database_url(url: str) -> str:
    """`postgresql://` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only it is here."""
    import importlib.util

    find = importlib.util.find_spec
    if url.startswith("postgresql://") and find("psycopg") is None and find("psycopg2"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url
