"""What a new user tripped over (issue 13): the CLI at 80 columns, usage errors, `runs`,
`tune --epochs`, a taken port, "1 epochs", the examples the help texts name, and the drawing
page's empty image."""

from __future__ import annotations

import json
import socket
import tomllib
from pathlib import Path

import click
import pytest
from runfiles import fake_run
from test_web import base_url  # noqa: F401  the drawing page's fixture (browser: conftest)
from typer.main import get_command
from typer.testing import CliRunner

from digitlab.cli import app
from digitlab.errors import DigitlabError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
runner = CliRunner()
NARROW = {"COLUMNS": "80"}


def invoke(*args, **kwargs):
    kwargs.setdefault("prog_name", "digitlab")
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)


def _commands(command=None, path=()):
    command = command or get_command(app)
    yield list(path), command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands())
IDS = [" ".join(path) or "digitlab" for path, _ in COMMANDS]


# ------------------------------------------------------------------------------ --help at 80
@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_help_at_80_columns_cuts_nothing(path, command):
    result = invoke(*path, "--help", env=NARROW)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(map(len, lines)) <= 80
    assert not [line for line in lines if "…" in line], result.output


def test_every_train_option_has_help_text():
    train = get_command(app).commands["train"]
    missing = [p.name for p in train.params if isinstance(p, click.Option) and not p.help]
    missing += [p.name for p in train.params if getattr(p, "help", "x") in (None, "")]
    assert not missing, missing
    assert "step size" in invoke("train", "--help", env=NARROW).output  # --learning-rate


# --------------------------------------------------------------------------- usage errors
@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_an_unknown_option_is_one_error_line_and_exit_2(path, command):
    result = invoke(*path, "--no-such-option")
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: No such option: --no-such-option"), lines[0]
    assert f"see `{' '.join(['digitlab', *path])} --help`" in lines[0]
    assert "╭" not in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["evaluate"], "Missing argument 'run'"),
        (["show", "--split", "middle"], "'middle' is not one of 'train', 'test'"),
        (["trian"], "No such command 'trian'. Did you mean 'train'?"),
        (["train", "--epochs", "ten"], "Invalid value for '--epochs'"),
        (["tune", "report", "--top"], "Option '--top' requires an argument"),
    ],
)
def test_usage_errors_are_one_line(args, says):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and result.output.startswith("Error: "), result.output
    assert says in result.output


def test_no_arguments_still_shows_the_help():
    result = invoke(env=NARROW)
    assert "Usage: digitlab" in result.output and "Error" not in result.output


# -------------------------------------------------------------------------------------- runs
def _run(folder: Path, name: str, created: str, history: dict | None = None) -> Path:
    from digitlab.runs import write_history

    path = fake_run(folder / name, created=created, accuracy=0.9761)
    if history:
        write_history(path / "history.csv", history)
    return path


def test_runs_shows_whole_names_and_validation_columns_in_an_80_column_pipe(tmp_path):
    a = _run(tmp_path, "20261202-101500-seed", "2026-12-02T10:15:00")
    history = {"loss": [0.3], "accuracy": [0.9], "val_loss": [0.1234], "val_accuracy": [0.9688]}
    b = _run(tmp_path, "20261202-101501-seed", "2026-12-02T10:15:01", history)
    long = _run(tmp_path, "20261202-101502-" + "x" * 40, "2026-12-02T10:15:02")
    result = invoke("runs", "--runs-dir", tmp_path, env=NARROW)
    assert result.exit_code == 0, result.output
    for path in (a, b, long):
        assert path.name in result.output  # never `20261202-…`
    assert "…" not in result.output
    row = next(line for line in result.output.splitlines() if b.name in line)
    assert "96.88%" in row and "0.1234" in row and "97.61%" in row
    short = [line for line in result.output.splitlines() if a.name in line]
    assert short and len(short[0]) > len(a.name)
    rows = json.loads(invoke("runs", "--runs-dir", tmp_path, "--json").output)
    by_name = {row["name"]: row for row in rows}
    assert by_name[b.name]["val_accuracy"] == 0.9688 and by_name[b.name]["val_loss"] == 0.1234
    assert by_name[a.name]["val_accuracy"] is None


def test_runs_fits_80_columns_with_ordinary_names(tmp_path):
    history = {"loss": [0.3], "accuracy": [0.9], "val_loss": [0.1234], "val_accuracy": [0.9688]}
    for i in range(3):
        _run(tmp_path, f"20261202-10150{i}-mlp-aug", f"2026-12-02T10:15:0{i}", history)
    result = invoke("runs", "--runs-dir", tmp_path, env=NARROW)
    assert max(map(len, result.output.splitlines())) <= 80, result.output


# -------------------------------------------------------------------------------------- tune
def test_tune_epochs_sets_the_per_trial_budget_without_a_space_file(monkeypatch, tmp_path):
    import digitlab.tune

    seen = {}

    class Result:
        interrupted = False

        def summary(self):
            return ["done"]

    def fake_tune(study, **kwargs):
        seen.update(kwargs)
        return Result()

    monkeypatch.setattr(digitlab.tune, "tune", fake_tune)
    result = invoke("tune", "--epochs", "2", "--trials", "1", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert seen["space"].epochs == 2
    assert seen["space"].hidden_layers == (1, 4)  # the rest is the default space

    result = invoke("tune", "--epochs", "3", "--space", EXAMPLES / "space.toml")
    assert seen["space"].epochs == 3 and seen["space"].activation == ("relu", "gelu")

    result = invoke("tune", "--epochs", "0")
    assert result.exit_code == 2 and "at least 1" in result.output


# ---------------------------------------------------------------------------- "1 epoch"
def test_train_says_1_epoch_not_1_epochs(monkeypatch, tmp_path):
    from digitlab import training
    from digitlab.runs import read_run

    path = fake_run(tmp_path / "20261202-101500-seed")
    metrics = {"test_accuracy": 0.9, "test_loss": 0.3, "train_seconds": 1.5}
    (path / "metrics.json").write_text(json.dumps(metrics))
    monkeypatch.setattr(training, "train", lambda spec, **kwargs: read_run(path))
    result = invoke("train", "--epochs", "1")
    assert result.exit_code == 0, result.output
    assert "after 1 epoch," in result.output and "1 epochs" not in result.output


# ------------------------------------------------------------------------------------- serve
def test_serve_on_a_taken_port_says_so_in_one_line_and_names_a_free_one(monkeypatch, tmp_path):
    import digitlab.runs
    from digitlab.api import bind_port, run_server

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(DigitlabError, match=rf"^port {port} is in use; try --port \d+$"):
            run_server(tmp_path, port=port)  # refused before the run is even read

        class Loaded:  # a run whose model predicts: serve checks it with one prediction
            path = tmp_path
            image_shape = (28, 28)

            def predict_proba(self, images):
                return images.reshape(len(images), -1)[:, :10].astype("float32")

        monkeypatch.setattr(digitlab.runs, "load_run", lambda ref, runs_dir=None: Loaded())
        result = invoke("serve", "latest", "--port", port)
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1, result.output
        suggested = int(result.output.split("--port ")[1].split()[0])
        assert result.output.startswith(f"Error: port {port} is in use; try --port {suggested}")
        assert "serving" not in result.output and "http://" not in result.output
    with bind_port("127.0.0.1", suggested):
        pass  # the suggested port was free


def test_serve_announces_the_url_only_once_the_port_is_bound(monkeypatch, tmp_path):
    import uvicorn

    import digitlab.api
    import digitlab.api.server

    events = []
    monkeypatch.setattr(digitlab.api.server, "create_app", lambda run: "app")

    class Server:
        def __init__(self, config):
            events.append(("config", config.port))

        def run(self, sockets):
            events.append(("serve", sockets[0].getsockname()[1]))

    monkeypatch.setattr(uvicorn, "Server", Server)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    digitlab.api.run_server(tmp_path, port=port, on_listening=lambda url: events.append(url))
    assert events == [f"http://127.0.0.1:{port}", ("config", port), ("serve", port)]


def test_the_announced_url_takes_connections_while_the_model_loads(monkeypatch, tmp_path):
    """A browser opened by "serving on URL" must wait for the app, not be refused: the socket
    listens before the URL is announced, and uvicorn accepts what queued meanwhile."""
    import uvicorn

    import digitlab.api.server

    connected = []
    monkeypatch.setattr(digitlab.api.server, "create_app", lambda run: "app")

    def connect(url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5):
            connected.append(url)  # refused (ConnectionRefusedError) if not listening yet

    class Server:
        def __init__(self, config):
            pass

        def run(self, sockets):
            pass

    monkeypatch.setattr(uvicorn, "Server", Server)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    digitlab.api.server.run_server(tmp_path, port=port, on_listening=connect)
    assert connected == [f"http://127.0.0.1:{port}"]


# ---------------------------------------------------------------------------------- examples
def test_every_example_file_loads():
    from digitlab.config import load_spec_file
    from digitlab.experiments import load_definition
    from digitlab.presets import get_preset
    from digitlab.search_space import load_space

    files = sorted(p for p in EXAMPLES.iterdir() if p.is_file() and p.name != "README.md")
    assert {"wide.toml", "space.toml", "notebook.ipynb"} <= {p.name for p in files}
    for path in files:
        if path.suffix == ".ipynb":
            import nbformat

            nbformat.validate(nbformat.read(path, as_version=4))
            continue
        data = tomllib.loads(path.read_text())
        if "layers" in data or "train" in data:
            assert load_spec_file(path, get_preset("seed")).layers
        elif "variants" in data:
            assert len(load_definition(path).variants) >= 2
        else:
            assert load_space(path).epochs >= 1
    assert (EXAMPLES / "wide.toml").name in invoke("summary", "--help").output


def test_the_files_the_help_texts_name_exist():
    named = set()
    for _, command in COMMANDS:
        for word in (command.help or "").replace("`", " ").split():
            if word.startswith("examples/"):
                named.add(word.rstrip(".,)"))
    assert named, "no help text names an example"
    for name in named:
        assert (ROOT / name).is_file(), name


# ------------------------------------------------------------------------- the drawing page
@pytest.mark.browser
@pytest.mark.slow
def test_no_broken_image_before_the_first_prediction(browser, base_url):  # noqa: F811
    page = browser.new_page(viewport={"width": 1024, "height": 800})
    page.goto(base_url)
    page.wait_for_selector("#model-info:has-text('run ')")
    seen = page.locator("#seen")
    assert seen.get_attribute("src") is None
    assert seen.evaluate("e => getComputedStyle(e).visibility") == "hidden"  # no icon, no alt
    box = seen.bounding_box()
    assert box["width"] == 84 and box["height"] == 84  # its place is kept: no layout jump
    # as showPrediction does: the image gets its src and its figure is shown
    seen.evaluate(
        "e => { e.src = 'data:image/png;base64,' + 'iVBORw0KGgo=';"
        " e.closest('figure').hidden = false; }"
    )
    assert seen.evaluate("e => getComputedStyle(e).visibility") == "visible"
    page.close()
