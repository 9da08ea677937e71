"""Issue 19's cases: crafted run files (a history of inf, a ragged confusion matrix, a folder
where confidence.npz goes), images that are not files, runs TensorBoard can't read, and a
client that never finishes its headers. Each is one line (exit 2) or correct behaviour."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
from commands import one_line_error
from runfiles import model_run
from typer.testing import CliRunner

from digitlab.cli import app

runner = CliRunner()
RUN = "20260101-000000-seed"
OTHER = "20260101-000001-seed"


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    return model_run(tmp_path_factory.mktemp("robust19") / RUN)


@pytest.fixture
def runs(tmp_path, base_run) -> Path:
    folder = tmp_path / "runs"
    shutil.copytree(base_run, folder / RUN)
    shutil.copytree(base_run, folder / OTHER)
    return folder


# ----------------------------------------------------------- 7: a history of inf or 1e308
@pytest.mark.parametrize(
    "first, second",
    [("inf", "inf"), ("0.5", "inf"), ("1e308", "1e308"), ("-1e308", "1e308"), ("nan", "1e308")],
)
def test_compare_draws_runs_whose_history_holds_inf_or_huge_values(runs, first, second):
    rows = [f"{epoch},{value},0.8,{value},{value}" for epoch, value in ((1, first), (2, second))]
    history = "epoch,loss,accuracy,val_loss,mae\n" + "\n".join(rows) + "\n"  # mae: alone
    (runs / RUN / "history.csv").write_text(history)
    (runs / OTHER / "history.csv").write_text("epoch,loss\n1,0.5\n2,0.4\n")
    result = invoke("compare", RUN, OTHER, "--runs-dir", runs, "--out", runs / "cmp")
    assert result.exit_code == 0, result.output
    assert (runs / "cmp" / "compare.png").read_bytes().startswith(b"\x89PNG")
    result = invoke("report", RUN, "--runs-dir", runs)  # its training curves: the same values
    assert result.exit_code == 0, result.output


# ------------------------------------------------------------ 8: a ragged confusion matrix
@pytest.mark.parametrize(
    "matrix", [[[1, 2], [3]], [[1, 2], [3, 4]], [[1] * 10] * 9, [[1] * 9] * 10]
)
def test_a_confusion_matrix_that_is_not_classes_by_classes_is_one_line(runs, matrix):
    metrics = json.loads((runs / RUN / "metrics.json").read_text())
    (runs / RUN / "metrics.json").write_text(json.dumps(metrics | {"confusion_matrix": matrix}))
    for command in (["report", RUN], ["inspect", RUN, "--count", "10"], ["calibrate", RUN]):
        line = one_line_error(invoke(*command, "--runs-dir", runs))
        assert "metrics.json" in line and "'confusion_matrix'" in line, command
        assert "classes × classes" in line, line
        square = all(len(row) == len(matrix) for row in matrix)
        assert ("must be 10 × 10" if square else "must be square") in line, line


def test_a_square_confusion_matrix_of_the_run_s_classes_is_read(runs):
    from digitlab.runs import load_run

    run = load_run(runs / RUN)
    assert np.asarray(run.metrics.confusion_matrix).shape == (10, 10)


# -------------------------------------------------------- 15: an image that is not a file
def _not_an_image(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / "x.png"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")
    return path


@pytest.mark.parametrize(
    "kind, said",
    [("fifo", "a named pipe (FIFO)"), ("folder", "a folder"), ("devzero", "/dev/zero, a device")],
)
def test_explain_says_what_an_image_path_is_when_it_is_not_a_file(runs, tmp_path, kind, said):
    image = _not_an_image(tmp_path, kind)
    line = one_line_error(invoke("explain", RUN, image, "--runs-dir", runs))
    assert f"{image} is " in line and said in line and "not found" not in line


def test_a_missing_image_is_still_not_found(runs, tmp_path):
    line = one_line_error(invoke("explain", RUN, tmp_path / "gone.png", "--runs-dir", runs))
    assert "gone.png not found" in line


# ------------------------------------------------ 16: confidence.npz a folder, before the work
@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_calibrate_names_a_confidence_file_it_cannot_replace_before_any_work(
    runs, monkeypatch, kind
):
    import digitlab.confidence

    def no_work(*args, **kwargs):
        raise AssertionError("calibration ran although its result could not be stored")

    monkeypatch.setattr(digitlab.confidence, "calibrate", no_work)
    target = runs / RUN / "confidence.npz"
    with contextlib.suppress(FileNotFoundError):
        target.unlink()
    if kind == "folder":
        target.mkdir()
        (target / "keep").write_text("mine")
    else:
        os.mkfifo(target)
    line = one_line_error(invoke("calibrate", RUN, "--runs-dir", runs))
    said = "a folder" if kind == "folder" else "a named pipe (FIFO)"
    assert f"{target} is {said}" in line and "calibrat" in line
    assert "pass a file name" not in line
    assert (target / "keep").read_text() == "mine" if kind == "folder" else target.is_fifo()


# -------------------------------------------------- 18: board names the runs it cannot show
@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_board_names_the_runs_whose_tensorboard_is_not_a_folder(runs, kind, monkeypatch):
    from digitlab import board

    events = runs / RUN / "tensorboard"
    if kind == "file":
        events.write_text("not events")
    else:
        os.mkfifo(events)
    (runs / OTHER / "tensorboard").mkdir()
    said: list[str] = []
    assert board.skipped_runs(runs) == [(runs / RUN, events)]
    monkeypatch.setattr(board.ports, "check_free", lambda host, port: None)
    launched = []

    class FakeBoard:  # TensorBoard itself is tested in test_board.py; here only what we say
        def configure(self, **kwargs):
            launched.append(kwargs)

        def launch(self):
            return "http://127.0.0.1:1/"

    import tensorboard.program

    monkeypatch.setattr(tensorboard.program, "TensorBoard", FakeBoard)
    board.start_tensorboard(runs, port=1, on_skipped=said.append)
    assert len(said) == 1 and RUN in said[0] and "tensorboard" in said[0]
    assert ("named pipe (FIFO)" if kind == "fifo" else "a file") in said[0]
    assert OTHER not in said[0]
    monkeypatch.setattr(board, "wait_for_interrupt", lambda: None)
    result = invoke("board", runs, "--port", "1")  # the command prints the line
    assert result.exit_code == 0 and result.output.startswith(said[0] + "\n"), result.output
    logdir = Path(launched[-1]["logdir"])  # a link per run it shows, at the run's name
    assert [link.name for link in logdir.iterdir()] == [OTHER]
    assert (logdir / OTHER).resolve() == (runs / OTHER / "tensorboard").resolve()


# ------------------------------------------------ 10: a client that never finishes its headers
@contextlib.contextmanager
def _server(run_path: Path, monkeypatch, http: str):
    import uvicorn

    from digitlab.api import server

    monkeypatch.setattr(server, "HEADER_TIMEOUT", 0.5)  # seconds; the default is 10
    from digitlab.api.app import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = server.server_config(create_app(run_path), "127.0.0.1", 0, "warning", http=http)
    serving = uvicorn.Server(config)
    thread = threading.Thread(target=serving.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if serving.started:
                break
            threading.Event().wait(0.05)
        assert serving.started
        yield sock.getsockname()[1]
    finally:
        serving.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _closed_by_server(port: int, sent: bytes) -> bytes:
    """Send `sent`, then read until the server closes; raises TimeoutError if it never does."""
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.settimeout(60)  # far above the bound: reaching it means "never closed"
        client.sendall(sent)
        received = b""
        while chunk := client.recv(4096):
            received += chunk
        return received


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_a_client_that_never_finishes_its_headers_is_disconnected(base_run, monkeypatch, http):
    pytest.importorskip(http)
    with _server(base_run, monkeypatch, http) as port:
        assert _closed_by_server(port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ") == b""
        # after a complete request, a second one that never ends is disconnected too
        answer = _closed_by_server(port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /hea")
        assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1") == 1
