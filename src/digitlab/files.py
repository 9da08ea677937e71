"""Writing files so that a crash or a kill never leaves half of one behind.

Everything digitlab writes goes to a temporary name in the destination's own folder (same
filesystem, so the rename is atomic) and is renamed into place only once complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from digitlab.errors import DigitlabError, WriteError


def kind_of(mode: int) -> str:
    """What a `stat` mode says a path is, in a user's words: "a folder", "a device", ..."""
    if stat.S_ISREG(mode):
        return "a file"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else "a special file"


def what_is(path: str | Path, mode: int) -> str:
    """`path` and what it is: "x is a folder", "x is a symlink to /dev/zero, a device"."""
    try:
        if os.path.islink(path):
            return f"{path} is a symlink to {os.readlink(path)}, {kind_of(mode)}"
    except (OSError, ValueError):
        pass
    return f"{path} is {kind_of(mode)}"


def not_a_file(path: str | Path) -> str:
    """Why `path` is not a file to read, in one line: "x not found", "x is a folder, not a
    file", "x is a symlink to /dev/zero, a device, not a file"."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return f"{path} not found"
    except (OSError, ValueError) as exc:
        return f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"
    return f"{what_is(path, info.st_mode)}, not a file"


def _stat(path: Path, error: type[Exception]) -> os.stat_result | None:
    """`path`'s stat, following symlinks; None if nothing is there (a dangling link included)
    or it can't be looked at (the write that follows then says why, e.g. a name too long)."""
    try:
        return os.stat(path)
    except OSError:
        return None
    except ValueError as exc:  # a NUL byte
        raise error(f"cannot write {path}: {exc}") from None


def check_output_folder(folder: str | Path, error: type[Exception] = WriteError) -> Path:
    """Make sure files can be written into `folder`: it and what exists of its parents are
    folders (missing ones are created when written into).

    Raises:
        error: `folder`, or a parent of it, is a file, a FIFO, a device or a socket; one line.
    """
    folder = Path(folder)
    for place in (folder, *folder.parents):
        info = _stat(place, error)
        if info is None:
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise error(f"{what_is(place, info.st_mode)}, not a folder; pass a folder")
        break
    return folder


def check_output(path: str | Path, error: type[Exception] = WriteError) -> Path:
    """The one check every output path goes through before digitlab writes it.

    Only a regular file (or nothing) may be replaced. A folder, a device (`/dev/null`), a
    named pipe or a socket is refused, a symlink to one too: the atomic rename would put a
    regular file in its place, and a device node replaced as root breaks the machine.

    Raises:
        error: what is at `path`, or above it, is not a regular file or a folder; one line.
    """
    path = Path(path)
    info = _stat(path, error)
    if info is None:
        check_output_folder(path.parent, error)
    elif stat.S_ISDIR(info.st_mode):
        raise error(f"{path} is a folder; pass a file name, e.g. {path / 'out.png'}")
    elif not stat.S_ISREG(info.st_mode):
        raise error(f"{what_is(path, info.st_mode)}, not a file; refusing to replace it")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` if the block succeeds.

    If the block raises, the temporary file is removed and `path` is left as it was. Only a
    regular file is ever replaced (`check_output`, before the block and again before the
    rename).

    Raises:
        WriteError: `path` is a folder, a device, a FIFO or a socket, or it can't be written
            (a full disk, no permission); one line naming the path.
    """
    path = check_output(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; results are meant to be read by others
        yield tmp_path
        check_output(path)  # something else may have appeared there while we worked
        os.replace(tmp_path, path)
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, data: Any) -> Path:
    """Write `data` as indented JSON to `path` atomically."""
    return write_text(path, json.dumps(data, indent=2) + "\n")


MB = 1 << 20
MAX_JSON_BYTES = 10 * MB  # a run's config.json or metrics.json, a spec or space file
MAX_MODEL_BYTES = 2 << 30  # a run's model.keras (the mlp-aug preset's is about 40 MB)


def _size(n: int) -> str:
    return f"{n / MB:,.1f} MB" if n < 1 << 30 else f"{n / (1 << 30):,.1f} GB"


def check_regular(path: str | Path, cap: int, error: type[Exception] = DigitlabError) -> int:
    """The size of `path`, once it is known to be a regular file of at most `cap` bytes.

    A symlink is followed; what it ends at must be a regular file too, so a link to
    `/dev/zero`, a FIFO or a folder is refused in one line instead of being read forever.

    Raises:
        error: missing, unreadable, not a regular file, or larger than `cap`.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path} not found") from None
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    return _check_stat(path, info, cap, error)


def _check_stat(path, info: os.stat_result, cap: int, error: type[Exception]) -> int:
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{path} is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path} is not a regular file (a device, FIFO or socket); refusing to read it")
    if info.st_size > cap:
        raise error(f"{path} is {_size(info.st_size)}, over the {_size(cap)} limit for this file")
    return info.st_size


def read_capped(
    path: str | Path, cap: int = MAX_JSON_BYTES, error: type[Exception] = DigitlabError
) -> bytes:
    """Read a regular file of at most `cap` bytes; anything else is `error` in one line.

    Opened without blocking and checked on the open descriptor, so a FIFO swapped in after a
    check can't hang the reader, and a file that grows is read no further than `cap`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise error(f"{path} not found") from None
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        _check_stat(path, os.fstat(fd), cap, error)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as handle:
        try:
            data = handle.read(cap + 1)
        except OSError as exc:
            raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > cap:
        raise error(f"{path} is over the {_size(cap)} limit for this file")
    return data


def is_dir(path: str | Path) -> bool:
    """`Path.is_dir()`, but False rather than an error for a name the system refuses (too
    long, a NUL byte): user-given names are only ever looked up through these."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


def is_file(path: str | Path) -> bool:
    """`Path.is_file()`, False rather than an error for a name the system refuses."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False
