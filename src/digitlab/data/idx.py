"""The IDX format, and reading a file safely: a regular file of a plausible size, or a clear no.

Every file is opened only once `stat` says it is a regular file of a plausible size, so a folder,
a FIFO or a device in a file's place is named as such, and nothing hangs or fills memory.
The IDX format: http://yann.lecun.com/exdb/mnist/ (bottom of the page).
"""

from __future__ import annotations

import gzip
import math
import os
import stat
import struct
import zlib
from pathlib import Path

import numpy as np

from digitlab.errors import DataError
from digitlab.files import what_is


def read_idx(source: str | os.PathLike | bytes) -> np.ndarray:
    """Parse an IDX file of unsigned bytes: labels (1 dimension) or images (3 dimensions).

    Args:
        source: a path (decompressed if it ends in `.gz`) or the raw file bytes.

    Returns:
        A writable uint8 array shaped as the header says.

    Raises:
        DataError: if the file is unreadable, not a regular file (a folder, a FIFO, a device),
            not IDX, or its length disagrees with its header.
    """
    if isinstance(source, bytes):
        return parse_idx(source, "<bytes>")
    try:
        data = read_file(Path(source))
    except NotAFile as e:
        raise DataError(f"{e}; give the path of an IDX file (raw or .gz)") from e
    return parse_idx(data, str(source))


def parse_idx(data: bytes, where: str) -> np.ndarray:
    if len(data) < 4:
        raise DataError(f"{where} is not an IDX file: only {len(data)} bytes")
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        magic = int.from_bytes(data[:4], "big")
        raise DataError(
            f"{where} is not an IDX file of unsigned bytes: magic number {magic:#010x}, "
            "expected 0x00000801 (labels) or 0x00000803 (images)"
        )
    if ndim not in (1, 3):
        raise DataError(f"{where} has {ndim} dimensions; expected 1 (labels) or 3 (images)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{where} is truncated: {len(data)} bytes, shorter than its header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(shape)
    if len(data) != expected:
        problem = "is truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{where} {problem}: {len(data)} bytes, but its header {shape} needs {expected}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape).copy()


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX file that holds `array`: how an .npz is checked against the raw-file hashes."""
    header = struct.pack(f">HBB{array.ndim}I", 0, 0x08, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


class NotAFile(DataError):
    """A path that exists but is a folder, a FIFO, a device or a socket: reading it is wrong."""


def file_status(path: Path) -> os.stat_result | None:
    """`path`'s stat, following symlinks; None if nothing is there (a dangling symlink included)."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from e


def not_a_file(path: Path, mode: int) -> str:
    """Say what `path` is instead of a file: "/x is a folder, not a file"."""
    return f"{what_is(path, mode)}, not a file"


def read_file(path: Path, max_bytes: int | None = None, what: str = "") -> bytes:
    """Read `path` (decompressed if it ends in `.gz`), refusing anything but a regular file.

    The file is opened non-blocking (a FIFO swapped in after the check cannot hang us) and checked
    again once open. With `max_bytes`, a bigger file (or a .gz that decompresses to more) is
    refused before it is read: `what` names what it should be, e.g. "mnist's train-labels…".

    Raises:
        NotAFile: if `path` is a folder, a FIFO, a device or a socket.
        DataError: if it is absent, unreadable, too big, or a broken .gz.
    """
    status = file_status(path)
    if status is not None and not stat.S_ISREG(status.st_mode):
        raise NotAFile(not_a_file(path, status.st_mode))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            status = os.fstat(f.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise NotAFile(not_a_file(path, status.st_mode))
            if path.suffix != ".gz":
                if max_bytes is not None and status.st_size > max_bytes:
                    raise DataError(f"{path} is {status.st_size} bytes, but {what} is {max_bytes}")
                return f.read()
            with gzip.GzipFile(fileobj=f) as stream:
                data = stream.read() if max_bytes is None else stream.read(max_bytes + 1)
            if max_bytes is not None and len(data) > max_bytes:
                raise DataError(
                    f"{path} decompresses to more than {max_bytes} bytes, the size of {what}"
                )
            return data
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e}") from e
