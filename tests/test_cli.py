"""Every command runs for real through Typer's runner, answers --help, and fails in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import typer
import typer.main
from PIL import Image
from typer.testing import CliRunner

from digitlab.cli import app
from digitlab.cli.options import train_flag_names
from digitlab.errors import DigitlabError
from digitlab.schema import TrainConfig

runner = CliRunner()

COMMANDS = [
    [],
    ["data"],
    ["data", "fetch"],
    ["data", "info"],
    ["show"],
    ["summary"],
    ["train"],
    ["runs"],
    ["evaluate"],
    ["predict"],
    ["preprocess"],
    ["serve"],
    ["tune"],
]


def invoke(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "digitlab")
def test_every_command_answers_help(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    if command and command != ["data"]:
        assert "Example" in result.output  # every command shows how to use it


def test_help_starts_without_importing_keras():
    code = "import sys; from digitlab.cli import app; print('keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_data_fetch_and_info_describe_real_mnist(mnist):
    fetched = invoke("data", "fetch")
    assert fetched.exit_code == 0 and "verified" in fetched.output
    info = invoke("data", "info", "--json")
    data = json.loads(info.output)
    assert data["splits"]["train"]["images"] == [60000, 28, 28]
    assert round(data["pixel_mean"], 4) == 0.1307 and round(data["pixel_std"], 4) == 0.3081
    text = invoke("data", "info").output
    assert "0.1307" in text and "5923" in text


def test_show_writes_a_digit_a_grid_and_draws_in_the_terminal(tmp_path, mnist):
    one = invoke("show", "0", "--out", tmp_path / "d.png")
    assert one.exit_code == 0 and Image.open(tmp_path / "d.png").size[0] > 100
    grid = invoke(
        "show", "--grid", "3x4", "--split", "test", "--label", "7", "--out", tmp_path / "g.png"
    )
    assert grid.exit_code == 0 and (tmp_path / "g.png").exists()
    term = invoke("show", "0", "--terminal")
    assert term.exit_code == 0 and "label 5" in term.output and "█" in term.output


def test_summary_prints_the_keras_summary_without_training():
    result = invoke("summary")
    assert result.exit_code == 0
    assert "99,710" in result.output and "dropout" in result.output.lower()
    assert "optimizer=adam" in result.output


def test_summary_shows_each_layers_activation_and_the_resolved_learning_rate():
    import keras

    result = invoke("summary")
    assert result.exit_code == 0
    rows = [line for line in result.output.splitlines() if "Dense" in line or "Dropout" in line]
    # the seed preset: Dense(100, sigmoid), Dense(100, relu), Dropout(0.2), Dense(100, relu),
    # Dropout(0.2), Dense(10, sigmoid), each on its own row with its output shape and params
    activations = [next((a for a in ("sigmoid", "relu") if a in row), None) for row in rows]
    assert activations == ["sigmoid", "relu", None, "relu", None, "sigmoid"]
    # (the first column is the layer's name, numbered by Keras across the process)
    assert rows[0].split()[1:] == ["Dense", "100", "units", "sigmoid", "100", "78,500"]
    assert rows[2].split()[1:] == ["Dropout", "rate", "0.2", "100", "0"]
    assert rows[5].split()[1:] == ["Dense", "10", "units", "sigmoid", "10", "1,010"]
    adam = float(keras.optimizers.get("adam").learning_rate)  # Keras's own default: 0.001
    assert f"learning_rate={adam:g}, adam's default" in result.output
    assert "learning_rate=default" not in result.output


def test_summary_default_learning_rate_is_keras_own_for_every_optimizer():
    import keras

    from digitlab.model import default_learning_rate
    from digitlab.schema import OPTIMIZERS

    for name in OPTIMIZERS:
        built = keras.optimizers.get(name)  # the optimizer Keras builds with no arguments
        assert default_learning_rate(name) == pytest.approx(float(built.learning_rate)), name


@pytest.mark.slow
def test_train_runs_evaluate_predict_for_real(tmp_path, mnist):
    runs = tmp_path / "runs"
    trained = invoke(
        "train",
        "--epochs",
        "1",
        "--train-samples",
        "3000",
        "--metrics",
        "accuracy,precision,recall",
        "--runs-dir",
        runs,
        "--name",
        "cli",
    )
    assert trained.exit_code == 0, trained.output
    assert "test accuracy" in trained.output and "run: " in trained.output

    listed = json.loads(invoke("runs", "--runs-dir", runs, "--json").output)
    assert len(listed) == 1 and listed[0]["run"].endswith("-cli") and listed[0]["epochs"] == 1

    evaluated = invoke("evaluate", "latest", "--runs-dir", runs)
    assert evaluated.exit_code == 0
    assert "confusion matrix" in evaluated.output and "precision" in evaluated.output
    as_json = json.loads(invoke("evaluate", "latest", "--runs-dir", runs, "--json").output)
    assert np.array(as_json["confusion_matrix"]).sum() == 10_000

    np.save(tmp_path / "x.npy", mnist[1][0][:3])
    predicted = json.loads(
        invoke(
            "predict",
            "latest",
            "--runs-dir",
            runs,
            "--index",
            "0,1",
            "--npy",
            tmp_path / "x.npy",
            "--json",
        ).output
    )
    assert [row["input"] for row in predicted] == [
        "test[0]",
        "test[1]",
        "x.npy[0]",
        "x.npy[1]",
        "x.npy[2]",
    ]
    assert predicted[0]["digit"] == predicted[2]["digit"]  # same digit, two input paths
    assert len(predicted[0]["probabilities"]) == 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--preset", "nope"], "unknown preset 'nope'"),
        (["train", "--optimizer", "adamm"], "unknown optimizer 'adamm'"),
        (["train", "--loss", "hinge"], "unknown loss 'hinge'"),
        (["train", "--early-stopping", "2"], "add --validation-split"),
        (["train", "--ema-momentum", "1.5"], "'ema_momentum' must be less than 1"),
        (["summary", "--spec", "missing.toml"], "missing.toml not found"),
        (["evaluate", "no-such-run"], "run 'no-such-run' not found"),
        (["show", "99999999"], "out of range"),
        (["show", "--grid", "ten"], "--grid must look like 10x10"),
        (["predict", "latest"], "no readable runs in"),
    ],
)
def test_user_errors_are_one_line_with_exit_2(tmp_path, args, message):
    result = invoke(*args, env={"DIGITLAB_RUNS_DIR": str(tmp_path)})
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_spec_file_is_refused_before_training(tmp_path):
    spec = tmp_path / "net.toml"
    spec.write_text('[[layers]]\ntype = "Dense"\nunits = 10\nactivation = "sigmoyd"\n')
    result = invoke("train", "--spec", spec, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "unknown activation 'sigmoyd'" in result.output
    assert not (tmp_path / "runs").exists()


def test_the_installed_command_prints_errors_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "digitlab", "train", "--loss", "hinge"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") <= 2 and "unknown loss 'hinge'" in result.stderr
    assert "Traceback" not in result.stderr


_MAIN_WITH = """
import atexit, sys, threading, time
from digitlab.cli import main
atexit.register(lambda: print("at-exit handler ran", flush=True))
if sys.argv[1] == "thread":  # a thread still working when the command is done
    def work():
        time.sleep(0.5)
        print("thread finished", flush=True)
    threading.Thread(target=work).start()
sys.argv = ["digitlab", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize(
    ("thread", "args", "status"),
    [("none", ["--help"], 0), ("none", ["train", "--loss", "hinge"], 2), ("thread", ["--help"], 0)],
)
def test_the_command_exits_with_its_status_after_its_handlers_and_its_threads(
    tmp_path, thread, args, status
):
    # `main` skips the interpreter's teardown (os._exit) but not what a finished command
    # needs: the at-exit handlers, flushed streams, a thread still running, the exit status.
    result = subprocess.run(
        [sys.executable, "-c", _MAIN_WITH, thread, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == status, result.stderr
    assert result.stdout.rstrip().endswith("at-exit handler ran")
    assert ("thread finished" in result.stdout) == (thread == "thread")
    if status == 0:
        assert "Usage: digitlab" in result.stdout
    else:
        assert "unknown loss 'hinge'" in result.stderr and "Traceback" not in result.stderr


def test_a_reader_that_goes_away_ends_the_command_quietly(tmp_path):
    reader = subprocess.Popen(  # `digitlab show 0 --terminal | head -c 1`, reading nothing
        [sys.executable, "-m", "digitlab", "show", "0", "--terminal"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    reader.stdout.close()
    stderr = reader.stderr.read().decode()
    # Click ends a command whose reader went away with status 1; `main`, a broken pipe at
    # the last flush with 141 (128 + SIGPIPE). Never a traceback or Python's complaint.
    assert reader.wait() in (1, 141), stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr


# ------------------------------------------------------------------ training flags from the schema
def _flag_value(field: str) -> str:
    """A value the field's flag parses (the resume guard refuses it before it is validated)."""
    default = TrainConfig.model_fields[field].default
    if default is None:
        return "1"
    return ",".join(default) if isinstance(default, tuple) else str(default)


def test_every_train_config_field_is_a_train_flag_with_its_description():
    help_text = " ".join(invoke("train", "--help", env={"COLUMNS": "200"}).output.split())
    train = typer.main.get_command(app).commands["train"]
    options = {param.name: param for param in train.params}
    for field, info in TrainConfig.model_fields.items():
        long = "--" + field.replace("_", "-")
        assert options[field].opts[0] == long, field
        assert options[field].help == info.description, field
        assert long in help_text and info.description in help_text, field


def test_every_train_config_field_but_epochs_is_refused_with_resume(tmp_path):
    fields = [field for field in TrainConfig.model_fields if field != "epochs"]
    args = [arg for field in fields for arg in ("--" + field.replace("_", "-"), _flag_value(field))]
    result = invoke("train", "--resume", "latest", "--epochs", "3", *args, "--runs-dir", tmp_path)
    assert result.exit_code == 2, result.output
    refused = result.output.split("so ", 1)[1].split(" can't")[0].split(", ")
    in_help_order = [field for field in train_flag_names() if field != "epochs"]
    assert refused == ["--" + field.replace("_", "-") for field in in_help_order]
    assert "--epochs" not in refused and "(only --epochs extends a run)" in result.output


def test_a_field_added_to_train_config_becomes_a_flag_the_resume_guard_refuses(monkeypatch):
    from pydantic import Field

    from digitlab.cli import options, training

    class Smoothed(TrainConfig):
        label_smoothing: float | None = Field(None, description="Soften the one-hot targets.")

    monkeypatch.setattr(options, "TrainConfig", Smoothed)
    seen = {}

    @options.with_train_flags
    def command(spec_file: str | None = None, **flags) -> None:
        seen.update(flags)

    made = typer.Typer()
    made.command()(command)
    made.command("other")(lambda: None)  # two commands: Typer keeps the command's name
    help_text = runner.invoke(made, ["command", "--help"], env={"COLUMNS": "200"}).output
    assert "--label-smoothing" in help_text and "Soften the one-hot targets." in help_text
    assert runner.invoke(made, ["command", "--label-smoothing", "0.1"]).exit_code == 0
    assert seen["label_smoothing"] == 0.1 and seen["epochs"] is None
    with pytest.raises(DigitlabError, match=r"so --label-smoothing can't be changed"):
        training._refuse_with_resume(None, None, None, {**seen, "epochs": 5})


def test_train_flags_reach_the_spec_as_typed_training_options(monkeypatch):
    from digitlab import training

    trained = []

    def fake_train(spec, **kwargs):
        trained.append(spec)
        raise typer.Exit(0)

    monkeypatch.setattr(training, "train", fake_train)
    args = ["-e", "2", "-b", "64", "--lr", "0.01", "--metrics", "accuracy, recall"]
    result = invoke("train", *args, "-d", "fashion-mnist", "--ema-momentum", "0.99")
    assert result.exit_code == 0, result.output
    train = trained[0].train
    assert (train.epochs, train.batch_size, train.learning_rate) == (2, 64, 0.01)
    assert train.metrics == ("accuracy", "recall") and train.dataset == "fashion-mnist"
    assert train.ema_momentum == 0.99 and train.optimizer == "adam"  # the preset's own


# ---------------------------------------------------------------------------------------- ports
@pytest.mark.parametrize("port", ["0", "-1", "65536"])
@pytest.mark.parametrize(
    "command", [["serve", "latest"], ["board"], ["tune", "dashboard"]], ids=" ".join
)
def test_a_port_outside_1_to_65535_is_one_usage_line_before_anything_loads(
    monkeypatch, tmp_path, command, port
):
    import digitlab.runs

    loaded = []
    monkeypatch.setattr(digitlab.runs, "load_run", lambda *args, **kwargs: loaded.append(args))
    result = invoke(*command, "--port", port, env={"DIGITLAB_RUNS_DIR": str(tmp_path)})
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    bound = "less than or equal to 65535" if port == "65536" else "greater than or equal to 1"
    assert result.output.startswith("Error: Invalid value for '--port': ")
    assert bound in result.output and "--help`)" in result.output
    assert loaded == []


# ----------------------------------------------------------------------------------- experiment
def test_experiment_passes_its_options_and_an_interrupted_one_says_how_to_go_on(
    monkeypatch, tmp_path
):
    from types import SimpleNamespace

    from digitlab.experiments import runner

    calls = []

    def fake_run_experiment(definition, **kwargs):
        calls.append((definition.name, kwargs))
        record = SimpleNamespace(model_dump_json=lambda: '{"status": "interrupted"}')
        return SimpleNamespace(record=record, folder=tmp_path / "exp", interrupted=True)

    monkeypatch.setattr(runner, "run_experiment", fake_run_experiment)
    args = ["--seeds", "2", "-e", "3", "--lr-policy", "linear", "--resume", "--json"]
    result = invoke("experiment", "dropout", "here", *args, "--runs-dir", tmp_path)
    assert result.exit_code == 130
    (name, kwargs), *_ = calls
    assert name == "dropout" and kwargs["resume"] == "here" and kwargs["runs_dir"] == tmp_path
    assert (kwargs["seeds"], kwargs["epochs"], kwargs["learning_rate_policy"]) == (2, 3, "linear")
    assert json.loads(result.stdout) == {"status": "interrupted"}
    said = "Interrupted; the finished runs are kept. Continue with: digitlab experiment dropout"
    assert result.stderr.split() == [*said.split(), "--resume", str(tmp_path / "exp")]
    invoke("experiment", "dropout", "--resume", "--runs-dir", tmp_path)
    assert calls[1][1]["resume"] == "latest" and calls[1][1]["quick"] is False
