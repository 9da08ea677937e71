"""Building a run directory safely: a hidden staging folder renamed when complete.

A killed process never leaves half a run where `digitlab runs` looks. A new run's folder is
claimed first with one `mkdir` (`claim_run_path`), which fails if the name is taken, so two
writers finishing in the same second get two folders; the finished run is renamed onto its
own empty claim, and never onto a folder holding anything. Replacing a run (a resume) keeps
the old one under a hidden `.replaced-` name until the new one is in place; the next write
in that folder finishes or undoes a swap that a kill interrupted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from digitlab.errors import RunError
from digitlab.files import check_output_folder
from digitlab.runs.folder import CONFIG_FILE

STAGING_PREFIX = ".staging-"
REPLACED_PREFIX = ".replaced-"
TARGET_FILE = ".target"  # inside a staging folder: the name it will be renamed to
REPLACES_FILE = ".replaces"  # inside a staging folder: it replaces the run at its target
MAX_CLAIMS = 1000  # names tried for one new run: NAME, NAME-2, … NAME-1000
# Tests set this to a step name to have the process SIGKILL itself there (see `_crash_point`).
CRASH_ENV = "DIGITLAB_TEST_CRASH_AT"


def claim_run_path(runs_dir: str | Path, name: str) -> Path:
    """Claim a fresh `runs_dir/<YYYYmmdd-HHMMSS>-<name>`: an empty folder made with one
    `mkdir`, which fails if the name exists, so no other writer can get it (the next free
    `-2`, `-3`, … is taken instead). Fill it with `staged_run(path, claimed=True)`.

    Raises:
        RunError: no free name (after many tries).
    """
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip(".-") or "run"
    return _claim(Path(runs_dir), f"{datetime.now():%Y%m%d-%H%M%S}-{safe[:80]}")


def _claim(parent: Path, stem: str) -> Path:
    for n in range(1, MAX_CLAIMS + 1):
        path = parent / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise RunError(f"no free folder name for {stem} in {parent}; move some runs away")


def check_writable(runs_dir: str | Path) -> Path:
    """Make sure runs can be written into `runs_dir` (creating it), before any training.

    Raises:
        RunError: it is a file, or it can't be created or written to.
    """
    runs_dir = check_output_folder(runs_dir, RunError)  # a FIFO or a device: named as such
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=runs_dir):
            pass
    except FileExistsError:
        raise RunError(f"--runs-dir {runs_dir} is a file, not a folder; pass a folder") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise RunError(
            f"cannot write runs into {runs_dir}: {reason}; pass another --runs-dir"
        ) from None
    return runs_dir


def _crash_point(step: str) -> None:
    """For the crash-safety tests: die here, as a `kill -9` would, if asked to."""
    if os.environ.get(CRASH_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def _pid_alive(name: str, prefix: str) -> bool:
    """Whether the process whose pid starts a staging or backup folder's name still runs."""
    try:
        pid = int(name.removeprefix(prefix).split("-", 1)[0])
        os.kill(pid, 0)
    except (ValueError, OverflowError, ProcessLookupError):
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def _swap_in(staging: Path, final: Path) -> None:
    """Rename a complete `staging` folder to `final`; an existing `final` is kept under a
    hidden `.replaced-PID-NAME` until the new one is in place, then removed."""
    if not final.exists():
        os.replace(staging, final)
    else:
        backup = final.parent / f"{REPLACED_PREFIX}{os.getpid()}-{final.name}"
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(final, backup)
        _crash_point("between-renames")
        os.replace(staging, final)
        shutil.rmtree(backup, ignore_errors=True)
    _unmark(final)


def _move_in(staging: Path, final: Path) -> Path:
    """Rename a complete `staging` folder onto `final`, the empty folder claimed for it (or
    a missing one): a rename replaces an empty folder and fails on one holding anything,
    which is never replaced: the run then goes to the next free name beside it.

    Returns:
        Where the run is.
    """
    try:
        os.replace(staging, final)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        final = _claim(final.parent, final.name)
        os.replace(staging, final)
    _unmark(final)
    return final


def _unmark(run: Path) -> None:
    (run / TARGET_FILE).unlink(missing_ok=True)
    (run / REPLACES_FILE).unlink(missing_ok=True)


def recover(runs_dir: str | Path) -> None:
    """Finish or undo what killed processes left in `runs_dir`; never delete a complete run.

    - a staging folder holding a complete run (its config.json is written last) is renamed
      to the run it was going to become: onto its empty claim, or replacing the older copy
      safely where it was a resume (never a folder it did not claim or replace);
    - an incomplete staging folder is removed (it holds no finished work), and so is the
      empty folder claimed for it;
    - an old run kept aside during a swap is put back if the new one never arrived, else
      removed.

    Only folders of processes that are no longer alive are touched.
    """
    runs_dir = Path(runs_dir)
    for staging in sorted(runs_dir.glob(f"{STAGING_PREFIX}*")):
        if _pid_alive(staging.name, STAGING_PREFIX):
            continue
        target = _target_of(staging)
        if target is not None and (staging / CONFIG_FILE).is_file():
            if (staging / REPLACES_FILE).exists():
                _swap_in(staging, runs_dir / target)
            else:
                _move_in(staging, runs_dir / target)
            continue
        shutil.rmtree(staging, ignore_errors=True)
        if target is not None and not (staging / REPLACES_FILE).exists():
            with contextlib.suppress(OSError):  # only an empty folder: the claim
                (runs_dir / target).rmdir()
    for backup in sorted(runs_dir.glob(f"{REPLACED_PREFIX}*")):
        if _pid_alive(backup.name, REPLACED_PREFIX):
            continue
        name = backup.name.removeprefix(REPLACED_PREFIX).split("-", 1)[-1]
        if (runs_dir / name).exists():
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(backup, runs_dir / name)


def run_name(folder: Path) -> str:
    """A run's name: its folder's, or for a staging folder the name it will be renamed to."""
    return _target_of(folder) or folder.name


def _target_of(staging: Path) -> str | None:
    try:
        name = (staging / TARGET_FILE).read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if name and "/" not in name and not name.startswith(".") else None


@contextlib.contextmanager
def staged_run(final: Path, *, claimed: bool = False) -> Iterator[Path]:
    """Yield a hidden staging folder; on success it becomes `final` in one rename.

    Args:
        final: the run's folder. With `claimed`, the empty folder `claim_run_path` made for
            a new run: the run is renamed onto it, and a folder holding anything is never
            replaced. Without, the run being continued (a resume), or a missing folder: an
            existing `final` is replaced only after the new one is complete, and is never
            the only copy lost (see `_swap_in` and `recover`).

    If the block raises, the staging folder (and an empty claim) is removed and an existing
    `final` is untouched.

    Raises:
        RunError: with `claimed`, `final` was filled by something else meanwhile; the run is
            kept beside it, under the name the message gives.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    recover(final.parent)
    staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f"{STAGING_PREFIX}{os.getpid()}-"))
    landed = None
    try:
        (staging / TARGET_FILE).write_text(final.name)
        if not claimed:
            (staging / REPLACES_FILE).touch()
        yield staging
        _crash_point("before-swap")
        if claimed:
            landed = _move_in(staging, final)
        else:
            _swap_in(staging, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if claimed and landed is None:
            with contextlib.suppress(OSError):  # only if still empty
                final.rmdir()
    if landed is not None and landed != final:
        raise RunError(
            f"{final} was filled by something else while the run was written; "
            f"the run is kept as {landed}"
        )
