"""Where digitlab writes: a regular file (or nothing) may be replaced; a folder, a device, a
FIFO or a socket never is. Every command that writes is pointed at a FIFO and at a device
node made here, and must refuse in one line (exit 2) and leave both as they were."""

from __future__ import annotations

import os
import shutil
import socket
import stat
from pathlib import Path

import numpy as np
import pytest
from commands import one_line_error
from runfiles import model_run
from typer.testing import CliRunner

from digitlab.cli import app
from digitlab.errors import WriteError
from digitlab.files import check_output, write_text

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def make_node(path: Path, kind: str) -> None:
    """A FIFO, or a character device with /dev/null's numbers (harmless if written)."""
    if kind == "fifo":
        os.mkfifo(path)
        return
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod needs root (CI runs as root); the FIFO case still runs")


def assert_untouched(path: Path, kind: str) -> None:
    info = os.lstat(path)
    if kind == "fifo":
        assert stat.S_ISFIFO(info.st_mode), f"{path} is no longer a FIFO"
    else:
        assert stat.S_ISCHR(info.st_mode), f"{path} is no longer a device"
        assert info.st_rdev == os.makedev(1, 3)


# ---------------------------------------------------------------------------- a run to point at
@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    return model_run(tmp_path_factory.mktemp("outputs") / "20260101-000000-seed")


@pytest.fixture
def runs(tmp_path, base_run) -> Path:
    """A runs folder holding two copies of the base run (compare needs two)."""
    folder = tmp_path / "runs"
    shutil.copytree(base_run, folder / base_run.name)
    shutil.copytree(base_run, folder / "20260101-000001-seed")
    return folder


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory) -> Path:
    from PIL import Image

    image = np.zeros((28, 28), np.uint8)
    image[6:22, 12:16] = 255  # a "1"
    path = tmp_path_factory.mktemp("image") / "one.png"
    Image.fromarray(image).save(path)
    return path


@pytest.fixture(scope="module")
def journal(tmp_path_factory) -> Path:
    """A tune journal with one complete trial, enough for `tune report`."""
    import optuna

    from digitlab.tune.storages import open_storage

    path = tmp_path_factory.mktemp("tune") / "tune.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(path), direction="maximize")
    params = {"hidden_layers": 1, "units_1": 16, "dropout_1": 0.0, "activation": "relu",
              "optimizer": "adam", "learning_rate": 1e-3, "batch_size": 128}  # fmt: skip
    dists = {key: optuna.distributions.CategoricalDistribution([value])
             for key, value in params.items()}  # fmt: skip
    study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=0.9))
    return path


RUN = "20260101-000000-seed"

# Each command that writes, and where its output goes: (arguments, the output's path), given
# the test's folder, the runs folder, an image and a tune journal.
WRITERS = {
    "show": lambda t, r, img, j: (["show", "0", "--out", t / "x"], t / "x"),
    "show-grid": lambda t, r, img, j: (["show", "--grid", "2x2", "--out", t / "x"], t / "x"),
    "preprocess": lambda t, r, img, j: (["preprocess", img, "--out", t / "x"], t / "x"),
    "explain": lambda t, r, img, j: (
        ["explain", RUN, img, "--runs-dir", r, "--out", t / "x"], t / "x"),
    "explain-default": lambda t, r, img, j: (
        ["explain", RUN, img, "--runs-dir", r], r / RUN / "inspect" / "explain-one.png"),
    "inspect": lambda t, r, img, j: (
        ["inspect", RUN, "--count", "10", "--runs-dir", r, "--out", t / "x"], t / "x"),
    "compare": lambda t, r, img, j: (
        ["compare", RUN, "20260101-000001-seed", "--runs-dir", r, "--out", t / "x"], t / "x"),
    "report": lambda t, r, img, j: (["report", RUN, "--runs-dir", r], r / RUN / "report.html"),
    "evaluate": lambda t, r, img, j: (
        ["evaluate", RUN, "--runs-dir", r], r / RUN / "confusion_matrix.png"),
    "calibrate": lambda t, r, img, j: (
        ["calibrate", RUN, "--runs-dir", r], r / RUN / "confidence.npz"),
    "train": lambda t, r, img, j: (["train", "--epochs", "1", "--runs-dir", t / "x"], t / "x"),
    "tune-report": lambda t, r, img, j: (
        ["tune", "report", "--study", "s", "--storage", j, "--out", t / "x"], t / "x"),
    "tune": lambda t, r, img, j: (
        ["tune", "--trials", "1", "--train-samples", "200", "--runs-dir", t / "x"], t / "x"),
    "experiment": lambda t, r, img, j: (
        ["experiment", "dropout", "--quick", "--runs-dir", t / "x"], t / "x"),
}  # fmt: skip


@pytest.mark.parametrize("kind", ["fifo", "device"])
@pytest.mark.parametrize("command", list(WRITERS))
def test_every_command_that_writes_leaves_a_fifo_or_device_alone(
    tmp_path, runs, digit_png, journal, mnist, command, kind
):
    args, target = WRITERS[command](tmp_path, runs, digit_png, journal)
    target.parent.mkdir(parents=True, exist_ok=True)
    make_node(target, kind)
    line = one_line_error(invoke(*args))
    assert str(target) in line
    assert ("FIFO" if kind == "fifo" else "device") in line
    assert_untouched(target, kind)


# ------------------------------------------------------------------------------- the one check
def test_a_regular_file_or_nothing_may_be_replaced(tmp_path):
    check_output(tmp_path / "new.png")
    (tmp_path / "old.png").write_text("old")
    check_output(tmp_path / "old.png")
    write_text(tmp_path / "old.png", "new")
    assert (tmp_path / "old.png").read_text() == "new"


@pytest.mark.parametrize("kind", ["fifo", "device", "socket", "folder", "link-to-fifo"])
def test_anything_else_is_refused_in_one_line_and_left_alone(tmp_path, kind):
    path = tmp_path / "out.png"
    if kind in ("fifo", "device"):
        make_node(path, kind)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(path))
    elif kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(tmp_path / "pipe")
        path.symlink_to(tmp_path / "pipe")
    before = os.lstat(path)
    with pytest.raises(WriteError) as caught:
        write_text(path, "data")
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    expected = {"fifo": "FIFO", "device": "device", "socket": "socket", "folder": "folder"}
    assert expected.get(kind, "FIFO") in message
    after = os.lstat(path)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)


def test_a_folder_output_whose_parent_is_a_fifo_is_refused_naming_it(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(WriteError, match=r"pipe is a named pipe \(FIFO\), not a folder"):
        write_text(tmp_path / "pipe" / "compare.png", "data")
    assert stat.S_ISFIFO(os.lstat(tmp_path / "pipe").st_mode)
