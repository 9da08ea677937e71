"""Every run findable (issue 23, item 2): `runs` lists the experiments' runs, every command
takes their names, an error's hint leads to a listing that shows them, `train` and
`evaluate` end with the report and what to try next, and `board` names runs by name."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
from commands import one_line_error
from test_report import full_run
from typer.testing import CliRunner

from digitlab.cli import app
from digitlab.errors import RunError
from digitlab.runs import EVENTS_DIR, find_run, listing, load_run, next_steps, read_run

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
NARROW = {"COLUMNS": "80"}

PLAIN = "20261203-080000-seed"
DROPOUT = "20261203-090000-dropout"
BATCH = "20261203-100000-batch-size"
NO_DROPOUT = "20261203-090001-no-dropout-seed0"
HALF = "20261203-090002-dropout-0.5-seed0"
FULL_BATCH = "20261203-100001-full-batch-seed0"


def invoke(*args, **kwargs):
    kwargs.setdefault("prog_name", "digitlab")
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)


def experiment_run(runs_dir: Path, experiment: str, run: str, **kwargs) -> Path:
    """A run as `digitlab experiment` leaves it: RUNS_DIR/experiments/EXPERIMENT/runs/RUN."""
    path = runs_dir / "experiments" / experiment / "runs" / run
    path.parent.mkdir(parents=True, exist_ok=True)
    return full_run(path, **kwargs)


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    """A plain run, and two experiments (the dropout one older) with their runs."""
    runs_dir = tmp_path / "runs"
    runs_dir.mkdir()
    full_run(runs_dir / PLAIN)
    experiment_run(runs_dir, DROPOUT, NO_DROPOUT, accuracy=0.95)
    experiment_run(runs_dir, DROPOUT, HALF, accuracy=0.96)
    experiment_run(runs_dir, BATCH, FULL_BATCH, accuracy=0.91)
    (runs_dir / "experiments" / ".staging-1-x" / "runs").mkdir(parents=True)  # not one
    return runs_dir


# ---------------------------------------------------------------------------------- runs
def test_runs_lists_each_experiments_runs_under_its_folder(runs_dir):
    result = invoke("runs", "--runs-dir", runs_dir, env=NARROW)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "…" not in result.output  # names whole, as commands take them
    assert max(map(len, lines)) <= 80, result.output  # an experiment's table: no network

    def line_of(text: str) -> int:
        (index,) = [i for i, line in enumerate(lines) if text in line]
        return index

    batch, dropout = line_of(f"experiment {BATCH}: 1 run"), line_of(f"{DROPOUT}: 2 runs")
    assert line_of(PLAIN) < batch < line_of(FULL_BATCH) < dropout  # newest experiment first
    assert dropout < line_of(NO_DROPOUT) and dropout < line_of(HALF)
    assert lines[dropout] == f"experiment {DROPOUT}: 2 runs"
    assert "95.00%" in lines[line_of(NO_DROPOUT)] and "96.00%" in lines[line_of(HALF)]
    assert ".staging" not in result.output


def test_runs_json_names_each_runs_experiment(runs_dir):
    rows = json.loads(invoke("runs", "--runs-dir", runs_dir, "--json").output)
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) == {PLAIN, NO_DROPOUT, HALF, FULL_BATCH}
    assert by_name[PLAIN]["experiment"] is None
    assert by_name[HALF]["experiment"] == DROPOUT and by_name[FULL_BATCH]["experiment"] == BATCH
    assert by_name[HALF]["run"] == str(runs_dir / "experiments" / DROPOUT / "runs" / HALF)
    assert by_name[HALF]["test_accuracy"] == 0.96


def test_an_unreadable_experiment_run_is_listed_below_its_experiment(runs_dir):
    broken = runs_dir / "experiments" / BATCH / "runs" / FULL_BATCH / "config.json"
    broken.write_text("{")
    result = invoke("runs", "--runs-dir", runs_dir, env=NARROW)
    assert result.exit_code == 0, result.output
    tail = result.output.split(f"experiment {BATCH}")[1].split(f"experiment {DROPOUT}")[0]
    assert f"unreadable {FULL_BATCH}: " in tail.replace("\n", " ")


def test_a_name_two_experiments_share_is_listed_whole_and_refused_alone(runs_dir):
    experiment_run(runs_dir, BATCH, HALF)  # the same run name in both experiments
    experiment_run(runs_dir, BATCH, PLAIN)  # and the plain run's name
    rows = listing(runs_dir).rows
    names = {row["name"] for row in rows}
    assert {f"{DROPOUT}/{HALF}", f"{BATCH}/{HALF}", f"{BATCH}/{PLAIN}", PLAIN} <= names
    assert HALF not in names
    for row in rows:  # every name listed opens the run listed
        assert os.path.samefile(load_run(row["name"], runs_dir).path, row["run"]), row
    with pytest.raises(RunError) as error:
        load_run(HALF, runs_dir)
    message = str(error.value)
    assert "\n" not in message and f"{DROPOUT}/{HALF}" in message and f"{BATCH}/{HALF}" in message
    line = one_line_error(invoke("compare", HALF, PLAIN, "--runs-dir", runs_dir))
    assert f"{DROPOUT}/{HALF}" in line and f"{BATCH}/{HALF}" in line
    assert load_run(PLAIN, runs_dir).path == runs_dir / PLAIN  # the plain run keeps its name


# ------------------------------------------------------------------ commands taking a run
COMMANDS = [
    ["evaluate", "RUN"],
    ["evaluate", "RUN", "--json"],
    ["predict", "RUN", "--index", "0"],
    ["calibrate", "RUN"],
    ["inspect", "RUN"],
    ["explain", "RUN", "--index", "0"],
    ["serve", "RUN", "--port", "1"],
    ["report", "RUN"],
    ["compare", "RUN", PLAIN],
    ["train", "--resume", "RUN"],
]


@pytest.mark.parametrize("name", [HALF, f"{DROPOUT}/{HALF}"])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:1] + c[2:]))
def test_every_command_taking_a_run_takes_an_experiment_runs_name(
    runs_dir, monkeypatch, command, name
):
    """Each command resolves the name through `load_run` to the experiment's run folder (it
    is stopped there: what it does with the run is tested elsewhere)."""
    import digitlab.runs.run

    opened = []

    def read_run(path, config=None):
        opened.append(Path(path))
        raise RunError("stopped once the run was found")

    monkeypatch.setattr(digitlab.runs.run, "read_run", read_run)
    args = [name if arg == "RUN" else arg for arg in command]
    line = one_line_error(invoke(*args, "--runs-dir", runs_dir))
    assert line == "Error: stopped once the run was found"
    assert opened[0] == runs_dir / "experiments" / DROPOUT / "runs" / HALF


def test_report_and_compare_work_on_experiment_runs_by_name(runs_dir, tmp_path):
    result = invoke("report", HALF, "--runs-dir", runs_dir)
    assert result.exit_code == 0, result.output
    assert (runs_dir / "experiments" / DROPOUT / "runs" / HALF / "report.html").is_file()
    out = tmp_path / "cmp"
    names = (f"{DROPOUT}/{NO_DROPOUT}", HALF, FULL_BATCH, PLAIN)
    result = invoke("compare", *names, "--runs-dir", runs_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert "95.00%" in result.output and "96.00%" in result.output and "91.00%" in result.output


# ---------------------------------------------------------------------------- the hints
@pytest.mark.parametrize("command", [["evaluate", "nope"], ["report", "nope"]])
def test_the_not_found_hint_names_a_command_that_lists_the_experiments_runs(
    runs_dir, monkeypatch, tmp_path, command
):
    monkeypatch.chdir(tmp_path)  # where a plain `digitlab runs` shows another folder
    line = one_line_error(invoke(*command, "--runs-dir", runs_dir))
    assert "'nope'" in line and ("not found" in line or "neither" in line)
    hint = line.split("see `")[1].split("`")[0]
    argv = shlex.split(hint)
    assert argv[:2] == ["digitlab", "runs"]
    shown = invoke(*argv[1:], env=NARROW).output
    for name in (PLAIN, NO_DROPOUT, HALF, FULL_BATCH):
        assert name in shown, shown


def test_the_hint_is_plain_runs_for_the_default_runs_folder(runs_dir, monkeypatch):
    monkeypatch.chdir(runs_dir.parent)
    with pytest.raises(RunError, match=r"; see `digitlab runs`$"):
        load_run("nope")
    with pytest.raises(RunError, match=r"; see `digitlab runs`$"):
        load_run("nope", "runs")
    shown = invoke("runs", env=NARROW).output
    assert HALF in shown and DROPOUT in shown


def test_an_unknown_experiment_folder_names_the_listing_of_experiments(runs_dir):
    from digitlab.experiments.record import find_experiment

    with pytest.raises(RunError, match=rf"`digitlab runs --runs-dir {runs_dir}` lists each"):
        find_experiment("nope", None, runs_dir)


def test_find_run_takes_paths_names_and_experiment_names_only(runs_dir):
    half = runs_dir / "experiments" / DROPOUT / "runs" / HALF
    assert find_run(half, runs_dir) == half
    assert find_run(PLAIN, runs_dir) == runs_dir / PLAIN
    assert find_run(f"{DROPOUT}/{HALF}", runs_dir) == half
    for name in ("nope", f"{BATCH}/{HALF}", f"../{DROPOUT}/{HALF}", f"{DROPOUT}/runs/{HALF}"):
        assert find_run(name, runs_dir) is None, name


# --------------------------------------------------------------------- what to try next
def test_train_ends_with_the_report_and_two_commands_to_try(monkeypatch, tmp_path):
    from digitlab import training

    path = full_run(tmp_path / "my runs" / PLAIN)
    (path / "report.html").write_text("<html></html>")
    monkeypatch.setattr(training, "train", lambda spec, **kwargs: read_run(path))
    result = invoke("train", "--epochs", "1", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    quoted = shlex.quote(str(path))
    assert result.output.splitlines()[-3:] == [
        f"report: {path / 'report.html'}",
        f"try next: digitlab evaluate {quoted}",
        f"          digitlab serve {quoted}",
    ]
    for line in result.output.splitlines()[-2:]:  # each one a command a shell runs as is
        assert shlex.split(line.removeprefix("try next:"))[2] == str(path)


def test_evaluate_ends_with_the_report_and_two_commands_to_try(monkeypatch, tmp_path):
    """`make run` ends with `digitlab evaluate latest`, so these are its last lines too."""
    import digitlab.evaluation

    path = full_run(tmp_path / PLAIN)

    class Evaluation:
        def print(self, console, run_dir):
            console.print(f"run {run_dir}")

    monkeypatch.setattr(digitlab.evaluation, "evaluate", lambda run, data_dir=None: Evaluation())
    result = invoke("evaluate", "latest", "--runs-dir", tmp_path, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-3:] == [
        f"report: write it with `digitlab report {path}`",  # this run has none yet
        f"try next: digitlab explain {path} --index 0",
        f"          digitlab serve {path}",
    ]
    recipe = ROOT.joinpath("Makefile").read_text().split("\nrun:")[1].split("\n\n")[0]
    assert recipe.strip().splitlines()[-1].strip().endswith("digitlab evaluate latest")


def test_next_steps_name_a_report_that_exists_and_run_commands_after_the_run(tmp_path):
    run = read_run(full_run(tmp_path / "a"))
    (run.path / "report.html").write_text("")
    assert next_steps(run, ("explain --index 3 --json",)) == [
        f"report: {run.path / 'report.html'}",
        f"try next: digitlab explain {run.path} --index 3 --json",
    ]


def test_next_steps_name_a_run_of_the_default_runs_folder_as_runs_does(runs_dir, monkeypatch):
    monkeypatch.chdir(runs_dir.parent)  # the default runs folder, ./runs, is runs_dir
    monkeypatch.delenv("DIGITLAB_RUNS_DIR", raising=False)
    run = load_run(HALF)
    assert next_steps(run)[1:] == [
        f"try next: digitlab evaluate {HALF}",
        f"{'':10}digitlab serve {HALF}",
    ]
    assert next_steps(load_run(PLAIN))[1] == f"try next: digitlab evaluate {PLAIN}"


# --------------------------------------------------------------------------------- board
def _with_events(run: Path) -> Path:
    """The run's tensorboard/ folder, with a file TensorBoard takes for event files."""
    (run / EVENTS_DIR).mkdir()
    (run / EVENTS_DIR / "events.out.tfevents.0.host").write_bytes(b"")
    return run / EVENTS_DIR


def _tensorboard_names(logdir: Path) -> list[str]:
    """The run names TensorBoard's own multiplexer gives the runs under `logdir`."""
    from tensorboard.backend.event_processing.plugin_event_multiplexer import EventMultiplexer

    return sorted(EventMultiplexer().AddRunsFromDirectory(str(logdir)).Runs())


def test_board_names_each_run_as_runs_names_it(runs_dir, tmp_path):
    from digitlab.board import board_runs, link_runs

    experiments = runs_dir / "experiments"
    plain = _with_events(runs_dir / PLAIN)
    half = _with_events(experiments / DROPOUT / "runs" / HALF)
    full = _with_events(experiments / BATCH / "runs" / FULL_BATCH)
    shared = _with_events(experiment_run(runs_dir, BATCH, HALF))  # the same name twice
    (runs_dir / "no-config").mkdir()
    _with_events(runs_dir / "no-config")  # not a run
    runs = board_runs(runs_dir)
    assert runs == {
        PLAIN: plain,
        f"{BATCH}/{HALF}": shared,
        FULL_BATCH: full,
        f"{DROPOUT}/{HALF}": half,
    }
    assert {name: load_run(name, runs_dir).path / EVENTS_DIR for name in runs} == runs
    folders = [path.parent for path in runs.values()] + [runs_dir / "no-config"]
    assert _tensorboard_names(runs_dir) == sorted(  # what `--logdir runs` shows: not names
        f"{folder.relative_to(runs_dir)}/{EVENTS_DIR}" for folder in folders
    )
    logdir = tmp_path / "logdir"
    logdir.mkdir()
    assert link_runs(runs, logdir) == []
    assert _tensorboard_names(logdir) == sorted(runs)


def test_board_never_links_inside_a_run_whose_name_begins_another(runs_dir, tmp_path):
    from digitlab.board import link_runs

    plain = _with_events(runs_dir / PLAIN)
    half = _with_events(runs_dir / "experiments" / DROPOUT / "runs" / HALF)
    before = sorted(plain.iterdir())
    logdir = tmp_path / "logdir"
    logdir.mkdir()
    runs = {PLAIN: plain, f"{PLAIN}/{HALF}": half, "a/b": half, "a": plain}
    assert link_runs(runs, logdir) == [f"{PLAIN}/{HALF}", "a"]
    assert sorted(plain.iterdir()) == before
    assert _tensorboard_names(logdir) == sorted([PLAIN, "a/b"])


def test_board_removes_the_link_folders_of_boards_that_were_killed(runs_dir):
    import subprocess
    import sys
    import tempfile

    from digitlab.board import LOGDIR_PREFIX, remove_stale_logdirs

    events = _with_events(runs_dir / PLAIN)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    temp = Path(tempfile.gettempdir())
    stale, live = temp / f"{LOGDIR_PREFIX}{dead}-t1", temp / f"{LOGDIR_PREFIX}{os.getpid()}-t1"
    for folder in (stale, live):
        folder.mkdir()
        (folder / PLAIN).symlink_to(events, target_is_directory=True)
    try:
        remove_stale_logdirs()
        assert not stale.exists() and (live / PLAIN).is_symlink()
        assert [p.name for p in events.iterdir()] == ["events.out.tfevents.0.host"]  # untouched
    finally:
        for folder in (stale, live):
            if folder.exists():
                (folder / PLAIN).unlink()
                folder.rmdir()
