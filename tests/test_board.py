"""TensorBoard event files of every run, read back by TensorBoard's own reader, and the two
launchers: `digitlab board` (TensorBoard) and `digitlab tune dashboard` (optuna-dashboard),
checked over HTTP."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import keras
import numpy as np
import optuna
import pytest
from runfiles import fake_run
from test_tune import postgres_url  # noqa: F401  the throwaway PostgreSQL server fixture
from typer.testing import CliRunner

from digitlab.cli import app
from digitlab.errors import DigitlabError
from digitlab.events import EpochEvents, histogram_value, statistics
from digitlab.runs import EVENTS_DIR

SCALARS = ("loss", "accuracy", "val_loss", "val_accuracy")


def _accumulator(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(
        str(folder), size_guidance={"scalars": 0, "histograms": 0, "images": 0, "tensors": 0}
    )
    accumulator.Reload()
    return accumulator


def _steps(accumulator, kind: str, tag: str) -> list[int]:
    return [event.step for event in getattr(accumulator, kind)(tag)]


def _text(accumulator, tag: str = "config") -> str:
    (event,) = accumulator.Tensors(tag)
    return event.tensor_proto.string_val[0].decode()


# --------------------------------------------------------------------------- event files
def _tiny_model() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, activation="relu", name="hidden"),
            keras.layers.Dropout(0.5, name="drop"),
            keras.layers.Dense(2, name="out"),
        ]
    )
    model.compile(loss="mse", metrics=["mae"])
    return model


def _record(epochs: range, model: keras.Model | None = None) -> EpochEvents:
    """An EpochEvents that saw `epochs` end, as a fit would call it (no training needed)."""
    events = EpochEvents(np.arange(40, dtype=np.float32).reshape(10, 4), input_scale=0.1)
    events.set_model(model or _tiny_model())
    for epoch in epochs:
        events.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "val_loss": 2.0 / (epoch + 1)})
    return events


def test_events_hold_scalars_histograms_and_config_per_epoch(tmp_path):
    _record(range(3)).write(tmp_path / EVENTS_DIR, step=3, config_text='{\n  "name": "x"\n}')
    accumulator = _accumulator(tmp_path / EVENTS_DIR)
    assert _steps(accumulator, "Scalars", "loss") == [1, 2, 3]
    assert [e.value for e in accumulator.Scalars("val_loss")] == pytest.approx([2, 1, 2 / 3])
    tags = set(accumulator.Tags()["histograms"])
    assert {
        "weights/hidden/kernel",
        "weights/hidden/bias",
        "weights/out/kernel",
        "activations/hidden",
        "activations/drop",
        "activations/out",
    } <= tags
    assert _steps(accumulator, "Histograms", "activations/hidden") == [1, 2, 3]
    # the activations are those of the fixed sample, scaled as the fit scales it: 10 rows
    assert accumulator.Histograms("activations/out")[0].histogram_value.num == 10 * 2
    assert '"name": "x"' in _text(accumulator)
    assert accumulator.Tags()["images"] == []  # no pictures: an interrupted run has none


def test_a_resumed_run_appends_to_its_event_files_in_order(tmp_path):
    model = _tiny_model()
    first, second = tmp_path / "first" / EVENTS_DIR, tmp_path / "second" / EVENTS_DIR
    _record(range(2), model).write(first, step=2, config_text="{}")
    _record(range(2, 4), model).write(second, step=4, config_text="{}", previous=first)
    # Both files were written within the same second: the names must still sort in order,
    # or TensorBoard's reader purges the earlier epochs as "orphaned".
    assert len(list(second.iterdir())) == 2
    accumulator = _accumulator(second)
    assert _steps(accumulator, "Scalars", "loss") == [1, 2, 3, 4]
    assert _steps(accumulator, "Histograms", "weights/hidden/kernel") == [1, 2, 3, 4]
    assert _steps(accumulator, "Tensors", "config") == [2, 4]


MECHANISMS = {  # a recorder's record (mechanisms.json) of a one-layer network, 2 epochs
    "epochs": [0, 1, 2],
    "gradient_norms": {"hidden": [1.0, 0.5, 0.25]},
    "update_ratios": {"hidden": [1e-3, 2e-3, None]},
    "activations": {
        "hidden": {
            "activation": "relu",
            "edges": [0.0, 1.0, 2.0],
            "counts": [[3, 1], [2, 2], [0, 0]],
            "saturated": [None, None, None],
            "dead": [0.5, 0.25, 0.0],
        }
    },
    "noise_scale": {"epochs": [0, 2], "simple": [150.0, None], "error": [10.0, None]},
}


def test_the_recorded_mechanisms_are_scalars_and_histograms_per_epoch(tmp_path):
    _record(range(2)).write(tmp_path, step=2, config_text="{}", mechanisms=MECHANISMS)
    accumulator = _accumulator(tmp_path)

    def values(tag: str) -> list[tuple[int, float]]:
        return [(e.step, pytest.approx(e.value)) for e in accumulator.Scalars(tag)]

    assert values("mechanisms/gradient_norm/hidden") == [(0, 1.0), (1, 0.5), (2, 0.25)]
    assert values("mechanisms/update_ratio/hidden") == [(0, 1e-3), (1, 2e-3)]  # None: left out
    assert values("mechanisms/dead/hidden") == [(0, 0.5), (1, 0.25), (2, 0.0)]
    assert values("mechanisms/noise_scale") == [(0, 150.0)]
    assert "mechanisms/saturated/hidden" not in accumulator.Tags()["scalars"]  # relu: no bound
    first, second = accumulator.Histograms("mechanisms/activations/hidden")  # epoch 2: empty
    assert (first.step, second.step) == (0, 1)
    histo = first.histogram_value
    assert (histo.num, histo.min, histo.max) == (4, 0, 2)
    assert histo.sum == pytest.approx(3 * 0.5 + 1 * 1.5)  # counts × bin centres
    assert list(histo.bucket) == [0, 3, 1]


def test_a_damaged_mechanisms_record_leaves_out_its_events_not_the_run(tmp_path):
    damaged = {"epochs": [0, 1], "gradient_norms": {"hidden": ["a", {}]}, "activations": []}
    _record(range(2)).write(tmp_path, step=2, config_text="{}", mechanisms=damaged)
    accumulator = _accumulator(tmp_path)
    assert _steps(accumulator, "Scalars", "loss") == [1, 2]
    assert not [tag for tag in accumulator.Tags()["scalars"] if tag.startswith("mechanisms/")]


def test_a_resumed_run_writes_only_the_mechanisms_of_its_new_epochs(tmp_path):
    model = _tiny_model()
    first, second = tmp_path / "first", tmp_path / "second"
    before = {"epochs": [0, 1], "gradient_norms": {"hidden": [1.0, 0.5]}}  # the first fit's
    _record(range(1), model).write(first, step=1, config_text="{}", mechanisms=before)
    _record(range(1, 2), model).write(
        second, step=2, config_text="{}", previous=first, mechanisms=MECHANISMS
    )
    steps = _steps(_accumulator(second), "Scalars", "mechanisms/gradient_norm/hidden")
    assert steps == [0, 1, 2]  # each once: 0 and 1 from the first file, 2 from the second


def test_histograms_count_only_finite_values():
    assert histogram_value("w", np.asarray(statistics(np.array([np.nan, np.inf])))) is None
    value = histogram_value("w", np.asarray(statistics(np.array([1.0, np.nan, 3.0, 3.0]))))
    histo = value.histo
    assert (histo.num, histo.min, histo.max, histo.sum, histo.sum_squares) == (3, 1, 3, 7, 19)
    assert sum(histo.bucket) == 3 and histo.bucket[1] == 1 and histo.bucket[-1] == 2
    assert histo.bucket_limit[0] == 1 and histo.bucket_limit[-1] == pytest.approx(3)


def test_a_constant_tensor_gets_one_bucket_around_its_value():
    histo = histogram_value("b", np.asarray(statistics(np.zeros(5)))).histo
    assert histo.num == 5 and histo.bucket_limit[0] == -0.5 and histo.bucket_limit[-1] == 0.5
    assert sum(histo.bucket) == 5


@pytest.mark.slow
def test_a_trained_run_shows_in_tensorboards_reader(tmp_path):
    from digitlab.config import with_overrides
    from digitlab.presets import get_preset
    from digitlab.training import train

    spec = with_overrides(get_preset("seed"), train_samples=1000, epochs=2, validation_split=0.1)
    run = train(spec, runs_dir=tmp_path, verbose=0)
    accumulator = _accumulator(run.path / EVENTS_DIR)
    for tag in SCALARS:
        assert _steps(accumulator, "Scalars", tag) == [1, 2], tag
    assert [e.value for e in accumulator.Scalars("loss")] == pytest.approx(run.history["loss"])
    histograms = set(accumulator.Tags()["histograms"])
    for layer in run.model.layers:
        assert _steps(accumulator, "Histograms", f"activations/{layer.name}") == [1, 2]
        for weight in layer.weights:
            assert f"weights/{layer.name}/{weight.name}" in histograms
    assert {"confusion_matrix", "misclassified"} <= set(accumulator.Tags()["images"])
    (matrix,) = accumulator.Images("confusion_matrix")
    assert matrix.step == 2 and matrix.encoded_image_string.startswith(b"\x89PNG")
    assert json.loads(_text(accumulator))["epochs_done"] == 2
    recorded = json.loads((run.path / "mechanisms.json").read_text())
    scalars = set(accumulator.Tags()["scalars"])
    for layer in recorded["gradient_norms"]:
        assert _steps(accumulator, "Scalars", f"mechanisms/gradient_norm/{layer}") == [0, 1, 2]
        assert f"mechanisms/update_ratio/{layer}" in scalars
    for layer in recorded["activations"]:
        assert _steps(accumulator, "Histograms", f"mechanisms/activations/{layer}") == [0, 1, 2]
    noise = _steps(accumulator, "Scalars", "mechanisms/noise_scale")
    assert noise == recorded["noise_scale"]["epochs"]


@pytest.mark.slow
def test_an_interrupted_run_keeps_the_epochs_it_finished(tmp_path):
    from digitlab.config import with_overrides
    from digitlab.presets import get_preset
    from digitlab.training import resume, train

    class StopAfterTwo(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise KeyboardInterrupt

    spec = with_overrides(get_preset("seed"), train_samples=1000, epochs=4, validation_split=0.1)
    run = train(spec, runs_dir=tmp_path, verbose=0, callbacks=(StopAfterTwo(),))
    assert run.status == "interrupted" and run.epochs_done == 2
    accumulator = _accumulator(run.path / EVENTS_DIR)
    assert _steps(accumulator, "Scalars", "val_accuracy") == [1, 2]
    assert accumulator.Tags()["images"] == []
    finished = resume(run, verbose=0)
    accumulator = _accumulator(finished.path / EVENTS_DIR)
    assert _steps(accumulator, "Scalars", "loss") == [1, 2, 3, 4]
    assert [e.step for e in accumulator.Images("misclassified")] == [4]


# ----------------------------------------------------------------------------- launchers
def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def _serving(*args: str, timeout: float = 60):
    """Run `digitlab ARGS` in its own process group; yield the URL it prints; kill it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "digitlab", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in process.stdout], daemon=True
    ).start()
    try:
        deadline, seen = time.monotonic() + timeout, []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                assert process.poll() is None, f"exited {process.returncode}: {seen}"
                continue
            seen.append(line)
            if "http://" in line:
                yield line[line.index("http://") :].split()[0]
                return
        pytest.fail(f"no URL printed within {timeout} s: {seen}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def _get_json(url: str, until, timeout: float = 60):
    """GET `url` until `until(json)` holds (bounded); returns the last JSON."""
    deadline, data = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=10) as response:
            data = json.load(response)
        if until(data):
            return data
        time.sleep(0.5)
    pytest.fail(f"{url} never showed what was expected; last answer: {data}")


def test_board_serves_the_runs_to_tensorboard_by_their_run_names(tmp_path):
    """The runs folder's own runs and the experiments' (issue 23: not 27 runs all called
    `…/tensorboard`), each named as `digitlab runs` names it."""
    runs = tmp_path / "runs"
    experiment = runs / "experiments" / "20260101-000100-dropout" / "runs"
    for run in (runs / "20260101-000000-tiny", experiment / "20260101-000101-drop-seed0"):
        fake_run(run)
        _record(range(2)).write(run / EVENTS_DIR, step=2, config_text="{}")
    port = _free_port()
    with _serving("board", str(runs), "--port", str(port)) as url:
        assert url.startswith(f"http://127.0.0.1:{port}")
        names = _get_json(f"http://127.0.0.1:{port}/data/runs", lambda data: len(data) == 2)
        assert sorted(names) == ["20260101-000000-tiny", "20260101-000101-drop-seed0"]


def _one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    return result.output.strip()


def test_board_without_tensorboard_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # `import tensorboard` now fails
    result = CliRunner().invoke(app, ["board", str(tmp_path)])
    assert _one_line_error(result) == (
        "Error: TensorBoard is not installed; pip install 'digitlab[board]'"
    )


def test_board_on_a_taken_port_names_a_free_one(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["board", str(tmp_path), "--port", str(port)])
    assert _one_line_error(result).startswith(f"Error: port {port} is in use; try --port ")


def test_a_taken_port_names_the_nearest_free_one_for_every_server(tmp_path):
    """One helper (`digitlab.ports`) binds for `serve`, `board` and `tune dashboard`."""
    from digitlab import ports
    from digitlab.board import start_tensorboard

    with socket.socket() as taken, socket.socket() as next_one:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with contextlib.suppress(OSError):  # the next port taken too, if it was free
            next_one.bind(("127.0.0.1", port + 1))
            next_one.listen()
        suggestions = []
        for start in (
            lambda: ports.bind_port("127.0.0.1", port),
            lambda: start_tensorboard(tmp_path, port=port),
        ):
            with pytest.raises(
                DigitlabError, match=rf"^port {port} is in use; try --port \d+$"
            ) as e:
                start()
            suggestions.append(int(str(e.value).rsplit(" ", 1)[1]))
    assert suggestions[0] == suggestions[1] >= port + 2  # the next port was skipped
    ports.bind_port("127.0.0.1", suggestions[0]).close()  # it was free


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_launchers_refuse_a_port_outside_1_to_65535_in_one_line(tmp_path, port):
    """Library callers too (the CLI's --port bounds it first): not an OverflowError."""
    from digitlab.board import start_dashboard, start_tensorboard
    from digitlab.tune.storages import open_storage

    _small_study(open_storage(runs_dir=tmp_path))
    message = rf"^--port must be a TCP port between 1 and 65535, got {port}$"
    with pytest.raises(DigitlabError, match=message):
        start_tensorboard(tmp_path, port=port)
    with pytest.raises(DigitlabError, match=message):
        start_dashboard("small", runs_dir=tmp_path, port=port)


def test_an_unknown_host_is_one_line_not_a_taken_port(tmp_path):
    from digitlab.board import start_tensorboard

    with pytest.raises(DigitlabError, match=r"^--host no\.such\.host\.invalid is not an address"):
        start_tensorboard(tmp_path, host="no.such.host.invalid", port=6006)


def test_board_on_a_missing_folder_says_so(tmp_path):
    result = CliRunner().invoke(app, ["board", str(tmp_path / "nope")])
    assert "no runs folder" in _one_line_error(result)


def _small_study(storage, name: str = "small") -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(storage=storage, study_name=name)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=3)


def test_tune_dashboard_serves_the_study_of_the_journal_file(tmp_path):
    from digitlab.tune.storages import open_storage

    _small_study(open_storage(runs_dir=tmp_path))  # RUNS_DIR/tune.journal, as `tune` writes
    port = _free_port()
    args = ("tune", "dashboard", "--study", "small", "--runs-dir", str(tmp_path))
    with _serving(*args, "--port", str(port)) as url:
        assert url == f"http://127.0.0.1:{port}/dashboard/studies/0"
        data = _get_json(f"http://127.0.0.1:{port}/api/studies", lambda data: data)
        (study,) = data["study_summaries"]
        assert study["study_name"] == "small"
        with urllib.request.urlopen(url, timeout=10) as page:  # the page itself
            assert page.status == 200


def test_tune_dashboard_of_an_unknown_study_lists_the_known_ones(tmp_path):
    from digitlab.tune.storages import open_storage

    _small_study(open_storage(runs_dir=tmp_path))
    result = CliRunner().invoke(
        app, ["tune", "dashboard", "--study", "nope", "--runs-dir", str(tmp_path)]
    )
    assert "no study 'nope'" in _one_line_error(result) and "small" in result.output


def test_tune_dashboard_without_a_journal_creates_none(tmp_path):
    result = CliRunner().invoke(app, ["tune", "dashboard", "--runs-dir", str(tmp_path)])
    assert "no study storage at" in _one_line_error(result)
    assert not (tmp_path / "tune.journal").exists()


def test_tune_dashboard_without_optuna_dashboard_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)
    result = CliRunner().invoke(app, ["tune", "dashboard", "--runs-dir", str(tmp_path)])
    assert _one_line_error(result) == (
        "Error: optuna-dashboard is not installed; pip install 'digitlab[dashboard]'"
    )


def test_tune_dashboard_serves_a_study_on_postgresql(postgres_url):  # noqa: F811
    from digitlab.tune.storages import open_storage

    _small_study(open_storage(postgres_url), name="on-postgres")
    port = _free_port()
    args = ("tune", "dashboard", "--study", "on-postgres", "--storage", postgres_url)
    with _serving(*args, "--port", str(port)):
        data = _get_json(f"http://127.0.0.1:{port}/api/studies", lambda data: data)
        assert [s["study_name"] for s in data["study_summaries"]] == ["on-postgres"]


def test_waiting_for_ctrl_c_sees_a_sigint_that_a_server_thread_took():
    """The kernel may hand SIGINT to any thread; Python then only sets a flag for the main
    thread, which must look at it soon, not after an hour's sleep."""
    from digitlab.board import wait_for_interrupt

    main, guard_fired = threading.main_thread().ident, threading.Event()

    def server_thread_takes_the_signal():
        waiting.wait()
        time.sleep(0.2)  # the main thread is in wait_for_interrupt's sleep by now
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        time.sleep(15)  # the guard: wake the main thread itself if it missed the flag
        if not done.is_set():
            guard_fired.set()
            signal.pthread_kill(main, signal.SIGINT)

    done, waiting = threading.Event(), threading.Event()
    threading.Thread(target=server_thread_takes_the_signal, daemon=True).start()
    waiting.set()
    wait_for_interrupt()
    done.set()
    assert not guard_fired.is_set(), "the SIGINT taken by another thread was missed"
