"""The one reader and writer of `experiment.json`, and where experiment folders are found.

An experiment's folder is `RUNS_DIR/experiments/<timestamp>-<name>/`, its runs in `runs/`.
Everything else (the runner, the report, the CLI) asks here for the typed `ExperimentRecord`;
a malformed file is refused in one line by its validation.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from digitlab.errors import RunError, SpecError
from digitlab.experiments.schema import ExperimentRecord
from digitlab.files import MAX_JSON_BYTES, read_capped, write_text
from digitlab.runs import (
    EXPERIMENT_RUNS_FOLDER,
    EXPERIMENTS_FOLDER,
    Run,
    default_runs_dir,
    runs_command,
    scan_runs,
)
from digitlab.schema import validate

RECORD_FILE = "experiment.json"
# The folder layout is named where runs are found (`digitlab.runs`, which can't import this).
RUNS_FOLDER = EXPERIMENT_RUNS_FOLDER
LOCK_FILE = ".lock"  # flock'ed by the process running the experiment; holds its pid


def experiments_dir(runs_dir: str | Path | None = None) -> Path:
    """Where experiment folders live: `RUNS_DIR/experiments`."""
    return Path(runs_dir if runs_dir is not None else default_runs_dir()) / EXPERIMENTS_FOLDER


def read_record(folder: str | Path) -> ExperimentRecord:
    """A folder's `experiment.json`.

    Raises:
        RunError: missing, unreadable or not an experiment record.
    """
    path = Path(folder) / RECORD_FILE
    data = read_capped(path, MAX_JSON_BYTES, RunError)
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise RunError(f"{path} is not valid JSON ({exc}); run the experiment again") from None
    if not isinstance(parsed, dict):
        raise RunError(f"{path} must hold a JSON object with 'name' and 'variants'")
    return validate(ExperimentRecord, parsed, str(path), error=RunError)


def write_record(folder: str | Path, record: ExperimentRecord) -> Path:
    """Write `record` as the folder's `experiment.json` (atomically) and return its path.

    Raises:
        WriteError: the file can't be written.
    """
    return write_text(Path(folder) / RECORD_FILE, record.model_dump_json(indent=2) + "\n")


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold the experiment folder for this process while it is written: an exclusive
    `flock` on its `.lock` file (which holds the pid), released by the kernel however the
    process ends, kill -9 included, so no stale lock is ever left behind.

    Raises:
        RunError: another process holds it (its pid is named), or the lock can't be taken.
    """
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
    except OSError as exc:
        raise RunError(f"cannot lock the experiment {folder}: {exc.strerror or exc}") from None
    try:
        _take(fd, folder, path)
        yield
    finally:
        os.close(fd)


def _take(fd: int, folder: Path, path: Path) -> None:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise RunError(f"{path} is not a regular file; move it away to run the experiment")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        raise RunError(
            f"experiment {folder} is being run by another process "
            f"(pid {holder if holder.isdigit() else 'unknown'}); wait for it to finish"
        ) from None
    except OSError as exc:
        raise RunError(f"cannot lock the experiment {folder}: {exc.strerror or exc}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def find_experiment(ref: str | Path, name: str | None, runs_dir: str | Path | None) -> Path:
    """An experiment folder: a path, a folder name in RUNS_DIR/experiments, or "latest"
    (the newest folder of experiment `name`).

    Raises:
        RunError: nothing matches.
    """
    parent = experiments_dir(runs_dir)
    if str(ref) == "latest":
        found = [
            path
            for path, record in list_experiments(runs_dir)
            if name is None or record.name == name
        ]
        if not found:
            raise RunError(
                f"no {name or ''} experiment to resume in {parent}; run it without --resume first"
            )
        return found[-1]
    candidates = [Path(ref), parent / str(ref)]
    for candidate in candidates:
        if (candidate / RECORD_FILE).is_file():
            return candidate
    for candidate in candidates:
        record = candidate / RECORD_FILE
        if record.exists() or record.is_symlink():
            raise RunError(f"{record} is not a regular file; an experiment's record is a file")
        if candidate.is_dir():
            raise RunError(
                f"{candidate} has no {RECORD_FILE}, so it is not an experiment folder (or its "
                "record was removed); pass the folder an experiment wrote, or run it anew"
            )
    raise RunError(
        f"experiment folder '{ref}' not found (looked in . and {parent}); "
        f"`{runs_command(runs_dir)}` lists each experiment's folder above its runs"
    )


def list_experiments(runs_dir: str | Path | None = None) -> list[tuple[Path, ExperimentRecord]]:
    """The experiment folders under RUNS_DIR/experiments with a readable record, oldest first."""
    parent = experiments_dir(runs_dir)
    found = []
    for path in sorted(parent.iterdir()) if parent.is_dir() else ():
        try:
            found.append((path, read_record(path)))
        except (RunError, SpecError):
            continue
    return found


def existing_runs(folder: Path, tuning_seed: int) -> tuple[dict, dict]:
    """The runs already in an experiment's runs/ folder: `(cells, tuning)`, the runs of the
    compared seeds by (variant, seed) and the learning-rate tuning runs (seed `tuning_seed`)
    by (variant, learning rate); a complete run wins over an interrupted one of one key."""
    cells: dict[tuple[str, int], Run] = {}
    tuning: dict[tuple[str, float], Run] = {}
    for run in scan_runs(folder / RUNS_FOLDER):
        if not isinstance(run, Run):
            continue
        train = run.spec.train
        if train.seed == tuning_seed:
            found, key = tuning, (run.spec.name, float(train.learning_rate or 0.0))
        else:
            found, key = cells, (run.spec.name, train.seed)
        if key not in found or (run.status == "complete" and found[key].status != "complete"):
            found[key] = run
    return cells, tuning
