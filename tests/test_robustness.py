"""The attack campaign's cases, kept: crafted run folders, crash points, bad flags and files.

The rule checked everywhere: any input gives either a result or one line (`Error: ...`, exit
2), never a traceback; and no kill at any moment loses a finished run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from commands import one_line_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runfiles import config as run_config
from typer.testing import CliRunner

from digitlab.cli import app
from digitlab.errors import RunError, SpecError
from digitlab.presets import get_preset
from digitlab.runs import CONFIG_FILE, list_runs, load_run, recover, scan_runs

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


# ------------------------------------------------------------------------ a run to break
@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A readable run of the notebook's network (untrained weights: enough to be opened)."""
    import keras

    from digitlab.model import build_model, compile_model

    path = tmp_path_factory.mktemp("good") / "20260101-000000-seed"
    path.mkdir()
    spec = get_preset("seed")
    model = build_model(spec)
    compile_model(model, spec)
    model.save(path / "model.keras")
    (path / "config.json").write_text(json.dumps(run_config()))
    (path / "metrics.json").write_text(json.dumps({"test_accuracy": 0.5, "train_seconds": 1.0}))
    (path / "history.csv").write_text("epoch,loss,accuracy\n1,0.5,0.8\n")
    assert keras.saving.load_model(path / "model.keras") is not None
    return path


def _break(run: Path, how: str) -> None:
    """Damage a copy of a good run in one of the ways the campaign found."""
    config = json.loads((run / CONFIG_FILE).read_text())
    cases = {
        "created-not-a-timestamp": lambda: config.update(created="yesterday"),
        "created-missing": lambda: config.pop("created"),
        "epochs-text": lambda: config.update(epochs_done="ten"),
        "status-unknown": lambda: config.update(status="exploded"),
        "spec-not-a-table": lambda: config.update(spec=[1, 2]),
        "short-class-names": lambda: config["dataset"].update(class_names=["0", "1"]),
        "unknown-dataset": lambda: config["dataset"].update(name="cifar"),
        "shape-mismatch": lambda: config["preprocessing"].update(shape=[28, 28, 1]),
        "seed-negative": lambda: config.update(seed=-5),
        "layers-bomb": lambda: config["spec"]["layers"][0].update(units=10**8),
    }
    if how in cases:
        cases[how]()
        (run / CONFIG_FILE).write_text(json.dumps(config))
        return
    target = {"config": run / CONFIG_FILE, "metrics": run / "metrics.json"}
    model = run / "model.keras"
    if how == "config-not-json":
        target["config"].write_text("{ not json")
    elif how == "config-deep":
        target["config"].write_text("[" * 100_000 + "]" * 100_000)
    elif how == "config-bigint":
        target["config"].write_text('{"epochs_done": ' + "9" * 5000 + "}")
    elif how == "config-binary":
        target["config"].write_bytes(os.urandom(4096))
    elif how == "config-is-folder":
        target["config"].unlink()
        target["config"].mkdir()
    elif how == "config-devzero":
        target["config"].unlink()
        target["config"].symlink_to("/dev/zero")
    elif how == "config-fifo":
        target["config"].unlink()
        os.mkfifo(target["config"])
    elif how == "config-oversize":
        with target["config"].open("r+b") as handle:
            handle.truncate(11 << 20)  # sparse: no disk used
    elif how == "metrics-wrong-type":
        target["metrics"].write_text('{"test_accuracy": "high"}')
    elif how == "history-garbage":
        (run / "history.csv").write_text("epoch,loss\n1,lots\n")
    elif how == "history-binary":
        (run / "history.csv").write_bytes(b'epoch,loss\n1,"0.5\r\x00' + os.urandom(500))
    elif how == "model-missing":
        model.unlink()
    elif how == "model-devzero":
        model.unlink()
        model.symlink_to("/dev/zero")
    elif how == "model-fifo":
        model.unlink()
        os.mkfifo(model)
    elif how == "model-folder":
        model.unlink()
        model.mkdir()
    elif how == "model-oversize":
        with model.open("r+b") as handle:
            handle.truncate((2 << 30) + 1)  # sparse: no disk used
    elif how == "model-garbage":
        model.write_bytes(b"PK\x03\x04" + os.urandom(2000))
    else:
        raise AssertionError(how)


FILE_CASES = [
    "created-not-a-timestamp", "created-missing", "epochs-text", "status-unknown",
    "spec-not-a-table", "short-class-names", "unknown-dataset", "shape-mismatch",
    "seed-negative", "layers-bomb", "config-not-json", "config-deep", "config-bigint",
    "config-binary", "config-is-folder", "config-devzero", "config-fifo", "config-oversize",
    "metrics-wrong-type", "history-garbage", "history-binary",
]  # fmt: skip
MODEL_CASES = [
    "model-missing", "model-devzero", "model-fifo", "model-folder", "model-oversize",
    "model-garbage",
]  # fmt: skip


@pytest.fixture
def runs(tmp_path, good_run):
    """A runs folder holding a good run and a broken copy, named `broken`."""
    folder = tmp_path / "runs"
    shutil.copytree(good_run, folder / good_run.name)
    shutil.copytree(good_run, folder / "broken")
    return folder


@pytest.mark.parametrize("how", FILE_CASES)
def test_broken_run_files_are_one_line_errors_naming_the_file(runs, how):
    _break(runs / "broken", how)
    with pytest.raises(RunError) as error:
        load_run("broken", runs)
    message = str(error.value)
    assert "\n" not in message and "broken" in message
    # `runs` lists the good run and marks the broken one; `latest` skips it
    listed = scan_runs(runs)
    assert [r.status for r in listed] == ["complete", "unreadable"]
    assert listed[1].reason == message
    assert load_run("latest", runs).name == "20260101-000000-seed"
    for command in (("evaluate", "broken"), ("predict", "broken", "--index", "0")):
        line = one_line_error(invoke(*command, "--runs-dir", runs))
        assert "broken" in line
    result = invoke("runs", "--runs-dir", runs, "--json")
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert [row["status"] for row in rows] == ["complete", "unreadable"]


def test_the_field_is_named_in_the_message(runs):
    _break(runs / "broken", "created-not-a-timestamp")
    line = one_line_error(invoke("evaluate", "broken", "--runs-dir", runs))
    assert line.startswith(f"Error: {runs / 'broken' / 'config.json'}: 'created' must be a timest")
    shutil.copy(runs / "20260101-000000-seed" / CONFIG_FILE, runs / "broken" / CONFIG_FILE)
    _break(runs / "broken", "short-class-names")
    line = one_line_error(invoke("evaluate", "broken", "--runs-dir", runs))
    assert "'dataset.class_names' has 2 names but the output layer has 10 units" in line


@pytest.mark.parametrize("how", MODEL_CASES)
def test_a_model_file_that_is_not_a_safe_regular_file_is_refused(runs, how):
    _break(runs / "broken", how)
    run = load_run("broken", runs)  # the record is fine; the model is what's wrong
    with pytest.raises(RunError) as error:
        run.model  # noqa: B018
    assert "\n" not in str(error.value) and "model.keras" in str(error.value)
    line = one_line_error(invoke("predict", "broken", "--index", "0", "--runs-dir", runs))
    assert "model.keras" in line


@pytest.mark.parametrize("how", ["short-class-names", "model-devzero", "model-garbage"])
def test_serve_refuses_a_bad_run_at_start(runs, how):
    _break(runs / "broken", how)
    line = one_line_error(invoke("serve", "broken", "--runs-dir", runs, "--port", "8765"))
    assert "broken" in line


def _model_with(runs: Path, layer: dict) -> Path:
    """A model.keras whose first layer's config was replaced by `layer` (a crafted file)."""
    import zipfile

    path = runs / "broken" / "model.keras"
    with zipfile.ZipFile(path) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    config["config"]["layers"][1] = layer
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize(
    "layer",
    [
        {  # marshalled bytecode in a Lambda layer
            "module": "keras.layers",
            "class_name": "Lambda",
            "config": {
                "name": "evil",
                "function": {"class_name": "__lambda__", "config": {"code": "4wEAAAAAAAAA"}},
            },
        },
        {  # an activation that names a shell command
            "module": "keras.layers",
            "class_name": "Dense",
            "config": {"name": "d", "units": 100, "activation": "os.system"},
        },
    ],
    ids=["lambda-bytecode", "os-system-activation"],
)
def test_crafted_model_files_run_nothing_and_get_one_line(runs, tmp_path, layer):
    marker = tmp_path / "pwned"
    if layer["config"].get("activation") == "os.system":
        layer["config"]["activation"] = {"module": "os", "class_name": "system",
                                         "config": f"touch {marker}"}  # fmt: skip
    _model_with(runs, layer)
    with pytest.raises(RunError, match="could not be loaded safely"):
        load_run("broken", runs).model  # noqa: B018
    assert not marker.exists()


# ------------------------------------------------------------------- crash-safe replacement
CRASHER = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from digitlab.runs import staged_run
    final = Path(sys.argv[1])
    with staged_run(final) as staging:
        (staging / "model.keras").write_text("new")
        (staging / "config.json").write_text("{}")
    """
)


@pytest.mark.parametrize("step", ["before-swap", "between-renames"])
def test_a_kill_during_the_resume_swap_loses_no_run(tmp_path, step):
    final = tmp_path / "20260101-000000-seed"
    final.mkdir()
    (final / "config.json").write_text("{}")
    (final / "model.keras").write_text("old")
    env = {**os.environ, "DIGITLAB_TEST_CRASH_AT": step}
    done = subprocess.run([sys.executable, "-c", CRASHER, str(final)], env=env, check=False)
    assert done.returncode == -9  # killed at that step, as kill -9 would
    # whatever the kill left, one complete copy is reachable under a name we can find
    left = sorted(p.name for p in tmp_path.iterdir())
    assert any((tmp_path / name / "model.keras").exists() for name in left), left
    recover(tmp_path)  # what the next `digitlab train` in this folder does first
    assert sorted(p.name for p in tmp_path.iterdir()) == [final.name]
    assert (final / "model.keras").read_text() == "new"  # the finished work was kept


def test_stale_staging_cleanup_never_deletes_a_complete_run(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    # a backup of a replaced run whose new copy never arrived
    backup = tmp_path / f".replaced-{dead}-20260101-000000-seed"
    backup.mkdir()
    (backup / "config.json").write_text("{}")
    # a half-written staging folder (no config.json): holds no finished work
    half = tmp_path / f".staging-{dead}-x"
    half.mkdir()
    (half / ".target").write_text("20260102-000000-other")
    recover(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["20260101-000000-seed"]


# ----------------------------------------------------------------------- bad flags and files
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seed", "-1"], "'seed' must be at least 0"),
        (["--seed", str(2**70)], "'seed' must be less than 4294967296"),
        (["--epochs", "0"], "'epochs' must be at least 1"),
        (["--learning-rate", "inf"], "'learning_rate' must be a finite number"),
        (["--learning-rate", "nan"], "'learning_rate' must be a finite number"),
        (["--validation-split", "1.5"], "'validation_split' must be less than 1"),
        (["--optimizer", "adamm"], "did you mean 'adam'"),
        (["--metrics", "acuracy"], "unknown metric 'acuracy'"),
        (["--batch-size", "0"], "'batch_size' must be at least 1"),
        (["--train-samples", str(2**70)], "'train_samples' must be at most 60,000"),
    ],
)
def test_bad_training_flags_are_one_line(tmp_path, args, message):
    line = one_line_error(invoke("train", *args, "--runs-dir", tmp_path / "runs"))
    assert message in line
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_spec_pointing_to_a_folder_and_units_bomb(tmp_path):
    assert "is a folder" in one_line_error(invoke("train", "--spec", tmp_path))
    bomb = tmp_path / "bomb.toml"
    bomb.write_text('[[layers]]\ntype = "Dense"\nunits = 100000000\n')
    assert "'units' must be a whole number from 1" in one_line_error(
        invoke("summary", "--spec", bomb)
    )
    half = tmp_path / "half.toml"
    half.write_text("[train]\nepochs = 2.5\n")
    for command in (("summary",), ("train", "--runs-dir", tmp_path / "r")):
        line = one_line_error(invoke(*command, "--spec", half))
        assert "'train.epochs' must be a whole number, got 2.5" in line


@pytest.mark.parametrize("where", ["file", "proc"])
def test_unwritable_runs_dir_is_refused_before_training(tmp_path, where):
    runs_dir = tmp_path / "afile" if where == "file" else Path("/proc/digitlab-runs")
    if where == "file":
        runs_dir.write_text("x")
    line = one_line_error(invoke("train", "--epochs", "1", "--train-samples", "100",
                                 "--runs-dir", runs_dir))  # fmt: skip
    assert str(runs_dir) in line


def test_a_failed_save_keeps_the_trained_model_and_says_where(tmp_path, monkeypatch, mnist):
    import digitlab.runs.folder
    import digitlab.training as training
    from digitlab.config import with_overrides

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    # history.csv is written by runs/folder.py, the one writer of a run's files
    monkeypatch.setattr(digitlab.runs.folder, "write_history", disk_full)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    spec = with_overrides(get_preset("seed"), epochs=1, train_samples=256)
    with pytest.raises(RunError, match="No space left on device.*kept in") as error:
        training.train(spec, runs_dir=tmp_path / "runs", verbose=0)
    rescued = Path(str(error.value).split("kept in ")[1].split(";")[0])
    assert (rescued / "model.keras").is_file() and (rescued / "config.json").is_file()
    assert list((tmp_path / "runs").iterdir()) == []  # no half run left behind


def test_resume_honours_runs_dir_and_refuses_what_it_cannot_change(runs):
    for args, message in (
        (["--preset", "cnn"], "--preset can't be changed"),
        (["--epochs", "-1"], "'epochs' must be at least 1"),
    ):
        line = one_line_error(invoke("train", "--resume", "20260101-000000-seed", *args,
                                     "--runs-dir", runs))  # fmt: skip
        assert message in line
    # found by name in --runs-dir (before: looked only in ./runs)
    line = one_line_error(invoke("train", "--resume", "20260101-000000-seed", "--epochs", "1",
                                 "--runs-dir", runs))  # fmt: skip
    assert "already trained 1 of 1 epochs" in line


@pytest.mark.parametrize("command", ["show", "preprocess"])
def test_out_pointing_to_a_folder_is_one_line(tmp_path, command, mnist):
    from PIL import Image

    image = tmp_path / "digit.png"
    Image.fromarray(mnist[1][0][0]).save(image)
    args = ["show", "0"] if command == "show" else ["preprocess", image]
    line = one_line_error(invoke(*args, "--out", tmp_path))
    assert "is a folder" in line


def test_diverging_training_stops_with_a_clear_message(tmp_path):
    result = invoke("train", "--preset", "mlp", "--optimizer", "sgd", "--learning-rate", "100",
                    "--epochs", "2", "--train-samples", "2000",
                    "--runs-dir", tmp_path / "runs")  # fmt: skip
    assert result.exit_code == 2 and "Traceback" not in result.output
    line = result.output.strip().splitlines()[-1]  # after Keras's per-epoch lines
    assert not list((tmp_path / "runs").iterdir())
    assert "training diverged" in line and "nothing was saved" in line


def test_unexpected_errors_are_one_line_unless_debug(monkeypatch, tmp_path):
    import digitlab.runs

    def bug(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(digitlab.runs, "listing", bug)  # what `digitlab runs` calls
    line = one_line_error(invoke("runs", "--runs-dir", tmp_path), code=1)
    assert "ZeroDivisionError" in line and "--debug" in line
    monkeypatch.setenv("DIGITLAB_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        invoke("runs", "--runs-dir", tmp_path)


# ------------------------------------------------------------------------ property tests
toml_scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.booleans(),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
TRAIN_KEYS = ["epochs", "batch_size", "learning_rate", "validation_split", "optimizer", "seed",
              "metrics", "loss", "early_stopping", "train_samples", "dataset", "epoch"]  # fmt: skip
SPACE_KEYS = ["units", "hidden_layers", "dropout", "learning_rate", "optimizer", "activation",
              "batch_size", "epochs", "learning_rate_schedule", "unit"]  # fmt: skip


@pytest.mark.parametrize(
    ("train", "shown"),
    [
        ({"optimizer": "\n"}, "unknown optimizer '\\n'; valid optimizers: adam,"),
        ({"metrics": ["é\r\tx"]}, "unknown metric 'é\\r\\tx'; valid metrics:"),
        (
            {"opt\nimizer": "adam"},
            "unknown key 'opt\\nimizer' in [train] (did you mean 'optimizer'?)",
        ),
    ],
)
def test_a_name_with_a_line_break_is_shown_escaped_on_one_line(train, shown):
    from digitlab.config import Spec, validate

    base = get_preset("seed").model_dump()
    with pytest.raises(SpecError) as error:
        validate(Spec, {**base, "train": {**base["train"], **train}}, "spec file x")
    assert str(error.value).startswith(f"spec file x: {shown}")
    assert str(error.value).isprintable()  # no line break, tab or other control character


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.dictionaries(st.sampled_from(TRAIN_KEYS), toml_values, max_size=4),
       top=st.dictionaries(st.sampled_from(["name", "input", "layers", "description"]),
                           toml_values, max_size=2))  # fmt: skip
def test_any_spec_values_load_or_give_one_line(data, top):
    from digitlab.config import Spec, validate

    base = get_preset("seed").model_dump()
    try:
        spec = validate(Spec, {**base, **top, "train": {**base["train"], **data}}, "spec file x")
    except SpecError as error:
        assert "\n" not in str(error) and str(error).startswith("spec file x: ")
    else:
        assert spec.train.epochs >= 1 and 0 <= spec.train.seed < 2**32


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.dictionaries(st.sampled_from(SPACE_KEYS), toml_values, max_size=4))
def test_any_space_values_load_or_give_one_line(data):
    from digitlab.search_space import space_from_dict

    try:
        space = space_from_dict(data, "space file x")
    except SpecError as error:
        assert "\n" not in str(error) and str(error).startswith("space file x: ")
    else:
        assert space.units[0] <= space.units[1] and space.epochs >= 1


def test_runs_lists_all_good_runs_when_one_is_bad(runs):
    _break(runs / "broken", "config-deep")
    assert [run.name for run in list_runs(runs)] == ["20260101-000000-seed"]
    result = invoke("runs", "--runs-dir", runs)
    assert result.exit_code == 0 and "unreadable" in result.output


@pytest.mark.parametrize("make", ["fifo", "devzero", "folder"])
def test_npy_that_is_not_a_regular_file_is_refused_without_reading(runs, tmp_path, make):
    path = tmp_path / "batch.npy"
    if make == "fifo":
        os.mkfifo(path)
    elif make == "devzero":
        path.symlink_to("/dev/zero")
    else:
        path.mkdir()
    line = one_line_error(invoke("predict", "20260101-000000-seed", "--npy", path,
                                 "--runs-dir", runs))  # fmt: skip
    assert "batch.npy" in line
