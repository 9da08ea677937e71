"""Hyperparameter search: real searches on an MNIST subset, resume, workers, PostgreSQL.

Searches here are tiny (1 epoch, a few thousand digits, a handful of trials): on 2 CPU cores
most of a trial is JAX compiling the network, not training it.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import FixedTrial, TrialState

from digitlab.errors import DigitlabError, SpecError
from digitlab.presets import get_preset
from digitlab.schema import TrainConfig
from digitlab.search_space import SearchSpace, load_space, preset_point, spec_for_trial
from digitlab.tune import TEST_KILL_ENV, WORKER_ATTR, TuneResult, parse_duration, tune
from digitlab.tune.report import (
    MIN_TRIALS_FOR_IMPORTANCES,
    REPORT_PLOTS,
    TOP_TRIALS_CSV,
    TOP_TRIALS_MD,
    report,
    report_figures,
)
from digitlab.tune.storages import FAILURE_ATTR, FINISHED, open_storage
from digitlab.tune.study import METRIC, open_study

# Narrow ranges keep the networks small; what is tested is the bookkeeping, not the search.
TINY = SearchSpace(hidden_layers=(1, 2), units=(16, 64), batch_size=(128, 256), epochs=1)


def _recorded(study: str, storage=None, runs_dir=None) -> list[optuna.trial.FrozenTrial]:
    """The trials as a fresh reader of the storage sees them, not as `tune` returned them."""
    return optuna.load_study(study_name=study, storage=open_storage(storage, runs_dir)).trials


def _assert_every_trial_recorded_once(trials, expected: int, workers: int) -> None:
    assert sorted(t.number for t in trials) == list(range(expected))  # none lost, none twice
    assert len({t._trial_id for t in trials}) == expected
    assert all(t.state in FINISHED for t in trials)
    assert all(0 < t.value <= 1 for t in trials if t.state == TrialState.COMPLETE)
    assert len({t.user_attrs[WORKER_ATTR] for t in trials}) == workers  # all workers took part


@pytest.mark.slow
def test_small_search_records_trials_and_saves_the_best_as_a_run(tmp_path):
    from digitlab.evaluation import evaluate

    space = SearchSpace(epochs=1)  # the default table, one epoch per trial
    result = tune("small", space=space, trials=4, train_samples=5000, runs_dir=tmp_path)

    trials = _recorded("small", runs_dir=tmp_path)
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert trials[0].params == preset_point(space)  # the warm start: the mlp preset's network
    assert all(t.state in FINISHED for t in trials)
    assert (tmp_path / "tune.journal").is_file()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = result.best
    assert best.value == max(t.value for t in complete)

    run = result.run
    assert run.status == "complete" and run.path.parent == tmp_path
    # The run is the best trial rebuilt from its params and seed: same layers, same score.
    assert run.spec.layers == spec_for_trial(FixedTrial(best.params), space, run.spec.train).layers
    assert run.history["val_accuracy"][-1] == pytest.approx(best.value, abs=1e-5)
    assert run.dataset.train_samples == 5000
    evaluation = evaluate(run)
    assert evaluation.accuracy == pytest.approx(run.metrics.test_accuracy)
    # Chosen on validation digits only, it scores about the same on the unseen test set.
    assert abs(evaluation.accuracy - best.value) < 0.05

    written = report("small", runs_dir=tmp_path, out_dir=tmp_path / "report").paths
    names = {path.name for path in written}
    assert {"optimization_history.png", "parallel_coordinate.png", TOP_TRIALS_CSV} <= names
    for path in written:
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (tmp_path / "report" / TOP_TRIALS_CSV).read_text().splitlines()
    assert len(rows) == 1 + len(complete)
    assert rows[1].split(",")[:3] == ["1", str(best.number), f"{best.value:.4f}"]
    assert f"| 1 | {best.number} |" in (tmp_path / "report" / TOP_TRIALS_MD).read_text()


def _scored_study(tmp_path: Path, trials: int) -> optuna.Study:
    """A study of `trials` complete trials drawn from TINY and scored by a formula, not by
    training: what the report draws is tested, not the search."""
    study = open_study("scored", open_storage(runs_dir=tmp_path), TINY, TrainConfig(), "none")

    def score(trial: optuna.Trial) -> float:
        train = spec_for_trial(trial, TINY, TrainConfig()).train
        return 0.5 + trial.params["units_1"] / 200 + 0.1 * (train.optimizer == "adam")

    study.optimize(score, n_trials=trials)
    return study


def test_a_study_names_its_metric_so_the_dashboard_labels_its_axes(tmp_path):
    storage = open_storage(runs_dir=tmp_path)
    optuna.create_study(study_name="old", storage=storage, direction="maximize")  # unnamed
    for name in ("new", "old"):
        open_study(name, storage, TINY, TrainConfig(), "none")
        # a fresh reader, as optuna-dashboard is: "validation accuracy", not "Objective 0"
        assert optuna.load_study(study_name=name, storage=storage).metric_names == [METRIC]
    assert METRIC == "validation accuracy"


def test_importances_from_few_trials_come_with_a_warning_in_report_and_summary(tmp_path):
    import matplotlib.pyplot as plt

    _scored_study(tmp_path, 5)
    result = report("scored", runs_dir=tmp_path, out_dir=tmp_path / "report")
    assert result.complete == 5 and len(result.warnings) == 1
    warning = result.warnings[0]
    assert (
        "only 5 complete trials" in warning
        and f"fewer than {MIN_TRIALS_FOR_IMPORTANCES}" in warning
    )
    assert "chance" in warning  # why: so few points can't separate the parameters' effects
    assert result.summary()[-1] == warning  # the terminal lines `tune report` prints
    assert all(line.startswith("wrote ") for line in result.summary()[:-1])
    markdown = (tmp_path / "report" / TOP_TRIALS_MD).read_text()
    assert "**Warning: parameter importances rest on only 5 complete trials" in markdown
    study = optuna.load_study(study_name="scored", storage=open_storage(runs_dir=tmp_path))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    figures = report_figures(study, complete, warning)
    title = figures[REPORT_PLOTS[1]].get_suptitle()  # on the importances picture itself
    assert "5 complete trials" in " ".join(title.split())
    for figure in figures.values():
        plt.close(figure)

    summary = TuneResult.of(study, "journal", study.trials, None, None, False, 1.0, 0).summary()
    assert "only 5 complete trials" in summary[-1]  # `tune`'s own summary says it too


def test_importances_from_enough_trials_come_without_a_warning(tmp_path):
    study = _scored_study(tmp_path, MIN_TRIALS_FOR_IMPORTANCES)
    result = report("scored", runs_dir=tmp_path, out_dir=tmp_path / "report")
    assert result.complete == MIN_TRIALS_FOR_IMPORTANCES and result.warnings == []
    assert "parameter importances" not in (tmp_path / "report" / TOP_TRIALS_MD).read_text()
    summary = TuneResult.of(study, "journal", study.trials, None, None, False, 1.0, 0).summary()
    assert not any("importances" in line for line in summary)


def test_parallel_coordinate_draws_no_trial_in_white(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection
    from matplotlib.colors import to_rgb

    study = _scored_study(tmp_path, 6)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    figures = report_figures(study, complete)
    figure = figures[REPORT_PLOTS[2]]
    figure.canvas.draw()
    (lines,) = [c for c in figure.axes[0].collections if isinstance(c, LineCollection)]
    colours = lines.get_colors()[:, :3]
    assert len(colours) == len(complete)
    # every line at least 0.25 away in some channel from white and from the plot's own light
    # grey; Optuna's own map draws the worst trial (0.97, 0.98, 1.0): 0.10 from the grey
    for background in ((1.0, 1.0, 1.0), to_rgb(figure.axes[0].get_facecolor())):
        assert abs(colours - background).max(axis=1).min() >= 0.25
    assert len({tuple(colour) for colour in colours.round(3)}) > 1  # still coloured by value
    for figure in figures.values():
        plt.close(figure)


def test_warm_start_is_the_mlp_preset_network_when_the_space_holds_it():
    from digitlab.config import TrainConfig

    mlp = get_preset("mlp")
    point = preset_point(SearchSpace())
    spec = spec_for_trial(FixedTrial(point), SearchSpace(), TrainConfig())
    assert spec.layers[:-1] == mlp.layers[:-1]  # the same hidden layers, dropout included
    for key in ("optimizer", "learning_rate", "learning_rate_schedule", "batch_size"):
        assert getattr(spec.train, key) == getattr(mlp.train, key)
    assert preset_point(SearchSpace(units=(32, 512))) is None  # 1024 units: outside
    assert preset_point(SearchSpace(activation=("tanh",))) is None
    assert preset_point(SearchSpace(hidden_layers=(3, 4))) is None


@pytest.mark.slow
def test_interrupted_search_resumes_without_losing_finished_trials(tmp_path):
    args = f"'resume', space={TINY!r}, trials=4, train_samples=2000, save_best=False"
    code = (
        "from digitlab.search_space import SearchSpace\nfrom digitlab.tune import tune\n"
        f"tune({args}, runs_dir={str(tmp_path)!r})"
    )
    process = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 180
        done: list = []
        while not done:  # interrupt once the first of four trials is finished
            assert process.poll() is None, "the search ended before it could be interrupted"
            assert time.monotonic() < deadline, "no trial finished in 3 minutes"
            time.sleep(0.5)
            with contextlib.suppress(KeyError):  # the study is not created yet
                done = [t for t in _recorded("resume", runs_dir=tmp_path) if t.state in FINISHED]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 0  # Ctrl-C ends the search cleanly
    finally:
        process.kill()
    before = {t.number: (t.params, t.value) for t in _recorded("resume", runs_dir=tmp_path)
              if t.state in FINISHED}  # fmt: skip
    assert 1 <= len(before) < 4

    result = tune("resume", space=TINY, trials=4, train_samples=2000, save_best=False,
                  runs_dir=tmp_path)  # fmt: skip

    trials = _recorded("resume", runs_dir=tmp_path)
    finished = {t.number: (t.params, t.value) for t in trials if t.state in FINISHED}
    assert len(finished) == 4 and result.new_trials == 4 - len(before)
    assert {n: finished[n] for n in before} == before  # every finished trial kept as it was
    assert len({t.number for t in trials}) == len(trials)
    # the trial Ctrl-C cut short is recorded as failed, not left running or counted
    assert [t.state for t in trials if t.number not in finished] in ([], [TrialState.FAIL])


@pytest.mark.slow
def test_two_workers_on_the_journal_file_record_every_trial_once(tmp_path):
    result = tune("pair", space=TINY, trials=4, workers=2, train_samples=2000, save_best=False,
                  runs_dir=tmp_path)  # fmt: skip
    assert not result.interrupted
    _assert_every_trial_recorded_once(_recorded("pair", runs_dir=tmp_path), 4, workers=2)


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    candidates = [found] if found else sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    """A throwaway PostgreSQL server on loopback, for this module only; stopped at the end."""
    bindir = _postgres_bin()
    if bindir is None:
        reason = (
            "PostgreSQL server binaries (initdb, pg_ctl) not found; install Debian's "
            "postgresql package (`make system-deps`)"
        )
        if os.environ.get("CI"):
            pytest.fail(reason + "; CI must run this test")
        pytest.skip(reason)
    # The server refuses to run as root: run it as the postgres user the package created.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="digitlab-pg-"))
    if as_user:
        shutil.chown(folder, user="postgres")
    data, port = folder / "data", _free_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder} -c fsync=off"

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, timeout=60)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "digitlab", "--auth=trust", "-N")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w",
            "-o", options, "start")  # fmt: skip
        yield f"postgresql://digitlab@127.0.0.1:{port}/postgres"
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_on_postgresql_record_every_trial_once(postgres_url, tmp_path):
    result = tune("pair", space=TINY, trials=4, workers=2, train_samples=2000, save_best=False,
                  storage=postgres_url, runs_dir=tmp_path)  # fmt: skip
    assert not result.interrupted and result.storage == postgres_url
    assert not (tmp_path / "tune.journal").exists()
    _assert_every_trial_recorded_once(_recorded("pair", storage=postgres_url), 4, workers=2)


@pytest.mark.parametrize(
    ("space_file", "expected"),
    [
        ("unit = [32, 64]", "space.toml: unknown key 'unit' (did you mean 'units'?)"),
        ("units = [1024, 32]", "space.toml: empty range for units: [1024, 32]"),
        ("activation = []", "'activation' must be a list of at least 1, got ()"),
        ("learning_rate = [0.1]\noptimizer = ['adam', 'adagrd']", "unknown optimizer 'adagrd'"),
    ],
)
def test_bad_space_file_gets_one_clear_message(tmp_path, space_file, expected):
    path = tmp_path / "space.toml"
    path.write_text(space_file + "\n")
    with pytest.raises(SpecError) as error:
        load_space(path)
    message = str(error.value)
    assert expected in message and "\n" not in message
    if "unknown parameter" in message:
        assert "did you mean 'units'" in message
        assert "valid parameters: hidden_layers, units, activation, dropout" in message


def test_unreachable_storage_gets_one_clear_message(tmp_path):
    with socket.socket() as closed:  # bound but not listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        url = f"postgresql://digitlab:secret@127.0.0.1:{closed.getsockname()[1]}/studies"
        with pytest.raises(DigitlabError) as error:
            tune("nowhere", storage=url, trials=1, runs_dir=tmp_path)
    message = str(error.value)
    assert message.startswith("cannot open the study storage postgresql://digitlab:***@127.0.0.1")
    assert "refused" in message and "secret" not in message and "\n" not in message


@pytest.mark.parametrize(
    "url", ["postgresql://digitlab:secret@127.0.0.1:port/studies", "nosuchdb://digitlab:secret@x/y"]
)
def test_malformed_storage_url_gets_one_clear_message(tmp_path, url):
    with pytest.raises(DigitlabError) as error:
        tune("nowhere", storage=url, trials=1, runs_dir=tmp_path)
    message = str(error.value)
    assert "\n" not in message and "secret" not in message and "postgresql://" in message


@pytest.mark.parametrize(
    "content",
    [
        bytes(range(256)) * 4,  # binary, newlines included
        b"SQLite format 3\x00" + bytes(100),  # a SQLite file passed as a path
        b"my notes\nnot a journal\n",
        b'{"name": "json, but no journal"}\n',
        b'{"op_code": 99, "worker_id": "x"}\n',  # a journal of an operation Optuna doesn't know
    ],
)
def test_garbage_journal_file_gets_one_line_naming_it_and_stays_untouched(tmp_path, content):
    path = tmp_path / "notes.journal"
    path.write_bytes(content)
    with pytest.raises(SpecError) as error:
        tune("garbage", storage=path, trials=1, runs_dir=tmp_path)
    message = str(error.value)
    assert message.startswith(f"{path} is not an Optuna journal file: ")
    assert message.endswith("pass another --storage or move it away") and "\n" not in message
    with pytest.raises(SpecError, match="is not an Optuna journal file"):
        report("garbage", storage=path, out_dir=tmp_path / "report")
    assert path.read_bytes() == content  # nothing appended to someone else's file


# What a kill in the middle of Optuna's append leaves at the end of a journal: a cut-off line.
TORN_TAIL = b'{"op_code":8,"worker_id":"w","trial_id":1,"user_attr":{"fail'


def _journal_cut_off(path: Path, tail: bytes = TORN_TAIL) -> bytes:
    """Study 'cut' in the journal `path`: a complete trial and a RUNNING one of a process that
    died, then `tail` without a newline. Returns the complete lines."""
    from digitlab.config import TrainConfig

    study = optuna.create_study(study_name="cut", storage=open_storage(path), direction="maximize")
    trial = study.ask()
    spec_for_trial(trial, TINY, TrainConfig())  # draws the params a tuning trial has
    study.tell(trial, 0.9)
    ended = subprocess.Popen(["true"])
    ended.wait()
    _running_trial(study, f"{socket.gethostname()}:{ended.pid}", datetime.datetime.now())
    complete = path.read_bytes()
    path.write_bytes(complete + tail)
    return complete


def test_tune_recovers_a_journal_whose_last_line_a_kill_cut_off(tmp_path):
    path = tmp_path / "cut.journal"
    complete = _journal_cut_off(path)
    # The study holds its target already: tune only fails the dead trial (two appends)
    result = tune("cut", trials=1, save_best=False, storage=path, runs_dir=tmp_path)
    assert result.counts["COMPLETE"] == 1 and result.counts["FAIL"] == 1
    assert [t.state for t in _recorded("cut", storage=path)] == [TrialState.COMPLETE,
                                                                 TrialState.FAIL]  # fmt: skip
    content = path.read_bytes()
    assert content.startswith(complete) and content.endswith(b"\n")
    assert TORN_TAIL not in content  # dropped, not glued to the next entry
    tune("cut", trials=1, save_best=False, storage=path, runs_dir=tmp_path)  # reads on


@pytest.mark.parametrize("command", ["report", "dashboard"])
def test_report_and_dashboard_recover_a_cut_off_journal_as_tune_does(tmp_path, command):
    from digitlab.board import start_dashboard

    path = tmp_path / "cut.journal"
    complete = _journal_cut_off(path)
    if command == "report":
        report("cut", storage=path, out_dir=tmp_path / "report")
    else:
        server, _ = start_dashboard("cut", storage=path, runs_dir=tmp_path, port=_free_port())
        server.server_close()
    assert path.read_bytes() == complete  # the cut-off line dropped, the rest kept
    states = [t.state for t in _recorded("cut", storage=path)]
    assert states == [TrialState.COMPLETE, TrialState.RUNNING]


def test_a_journal_ending_in_something_else_than_a_cut_off_entry_is_refused(tmp_path):
    path = tmp_path / "cut.journal"
    complete = _journal_cut_off(path, tail=b"my notes")
    for call in (
        lambda: tune("cut", trials=1, save_best=False, storage=path, runs_dir=tmp_path),
        lambda: report("cut", storage=path, out_dir=tmp_path / "report"),
    ):
        with pytest.raises(SpecError) as error:
            call()
        message = str(error.value)
        assert message.startswith(f"{path} is not an Optuna journal file: its last line")
        assert "\n" not in message
    assert path.read_bytes() == complete + b"my notes"  # someone's file: left as it was


@contextlib.contextmanager
def _no_hang(seconds: int = 60):
    """A hang (reading a FIFO waits for a writer) becomes a failure, not a stuck suite."""

    def hung(signum, frame):
        raise AssertionError(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _special_file(path: Path, kind: str) -> contextlib.AbstractContextManager:
    """Make a FIFO, a folder, a socket or (as root) a device with /dev/null's numbers."""
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "device":
        if os.geteuid() != 0:
            pytest.skip("mknod needs root")
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    else:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(path))
        return contextlib.closing(listener)
    return contextlib.nullcontext()


@pytest.mark.parametrize("kind", ["fifo", "folder", "socket", "device"])
@pytest.mark.parametrize("command", [[], ["report"], ["dashboard", "--port", str(_free_port())]])
def test_storage_that_is_not_a_file_is_refused_in_one_line_before_it_is_opened(
    tmp_path, kind, command
):
    from typer.testing import CliRunner

    from digitlab.cli import app

    path = tmp_path / "study.journal"
    expected = {"fifo": "a named pipe (FIFO)", "folder": "a folder", "socket": "a socket",
                "device": "a device"}[kind]  # fmt: skip
    with _special_file(path, kind), _no_hang():
        mode = path.stat().st_mode
        result = CliRunner().invoke(
            app, ["tune", *command, "--storage", str(path), "--runs-dir", str(tmp_path)]
        )
        assert result.exit_code == 2, result.output
        assert result.output.strip() == (
            f"Error: {path} is {expected}, not an Optuna journal file; "
            "pass another --storage or move it away"
        )
        assert path.stat().st_mode == mode  # left as it was
    assert not path.with_name(path.name + ".lock").exists()


def _running_trial(study, worker: str, started: datetime.datetime) -> int:
    """A RUNNING trial of `worker` (host:pid), as a process killed mid-trial leaves it."""
    trial = optuna.trial.FrozenTrial(
        number=0, trial_id=0, state=TrialState.RUNNING, value=None, datetime_start=started,
        datetime_complete=None, params={}, distributions={}, user_attrs={WORKER_ATTR: worker},
        system_attrs={}, intermediate_values={},
    )  # fmt: skip
    study.add_trial(trial)
    return study.trials[-1].number


def test_rerun_fails_the_trials_that_dead_processes_left_running(tmp_path):
    host, now = socket.gethostname(), datetime.datetime.now()
    ended = subprocess.Popen(["true"])
    ended.wait()
    study = optuna.create_study(study_name="stuck", storage=open_storage(None, tmp_path),
                                direction="maximize")  # fmt: skip
    study.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.9))
    later = subprocess.Popen(["sleep", "60"])  # alive, but started after its "trial": pid reuse
    try:
        dead = _running_trial(study, f"{host}:{ended.pid}", now)
        reused = _running_trial(study, f"{host}:{later.pid}", now - datetime.timedelta(hours=1))
        alive = _running_trial(study, f"{host}:{os.getpid()}", now)  # this process runs
        remote = _running_trial(study, f"elsewhere:{ended.pid}", now)  # can't tell: left
        result = tune("stuck", trials=1, save_best=False, runs_dir=tmp_path)
    finally:
        later.kill()
        later.wait()

    states = {t.number: t.state for t in _recorded("stuck", runs_dir=tmp_path)}
    assert states[dead] == states[reused] == TrialState.FAIL
    assert states[alive] == states[remote] == TrialState.RUNNING
    assert result.counts["FAIL"] == 2 and result.counts["RUNNING"] == 2
    failed = _recorded("stuck", runs_dir=tmp_path)[dead]
    assert failed.user_attrs[FAILURE_ATTR] == "its worker process ended"


@pytest.mark.slow
def test_killed_worker_has_its_trial_failed_and_the_message_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv(TEST_KILL_ENV, "worker1")  # worker 1 SIGKILLs itself in its first trial
    with pytest.raises(DigitlabError) as error:
        tune("killed", space=TINY, trials=2, workers=2, train_samples=500, save_best=False,
             runs_dir=tmp_path)  # fmt: skip
    message = str(error.value)
    found = re.search(
        r"worker 1 \(pid (\d+)\) was killed by signal 9 \(SIGKILL\); "
        r"its trial (\d+) was marked failed", message
    )  # fmt: skip
    assert found, message
    assert "printed above" not in message and "\n" not in message
    pid, number = int(found[1]), int(found[2])
    trials = _recorded("killed", runs_dir=tmp_path)
    assert trials[number].state == TrialState.FAIL
    assert trials[number].user_attrs[WORKER_ATTR].endswith(f":{pid}")
    assert "killed by signal 9" in trials[number].user_attrs[FAILURE_ATTR]
    assert not [t for t in trials if t.state == TrialState.RUNNING]

    monkeypatch.delenv(TEST_KILL_ENV)
    result = tune("killed", space=TINY, trials=2, train_samples=500, save_best=False,
                  runs_dir=tmp_path)  # fmt: skip
    trials = _recorded("killed", runs_dir=tmp_path)
    assert len([t for t in trials if t.state in FINISHED]) == 2 and not result.interrupted
    assert not [t for t in trials if t.state == TrialState.RUNNING]


def _gone(pid: int) -> bool:
    """The process has ended (a zombie nobody reaped counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] in "ZX"
    except FileNotFoundError:
        return True


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_die_with_their_killed_parent_and_add_no_trials(tmp_path):
    code = (
        "from digitlab.search_space import SearchSpace\nfrom digitlab.tune import tune\n"
        f"tune('orphans', space={TINY!r}, trials=6, workers=2, train_samples=500, "
        f"save_best=False, runs_dir={str(tmp_path)!r})"
    )
    # worker 0 SIGKILLs the parent once both workers are inside a trial
    env = {**os.environ, TEST_KILL_ENV: "parent"}
    parent = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        assert parent.wait(timeout=240) == -signal.SIGKILL
        running = _recorded("orphans", runs_dir=tmp_path)  # the two trials the hook waited for
        assert [t.state for t in running] == [TrialState.RUNNING] * 2
        workers = [int(t.user_attrs[WORKER_ATTR].rpartition(":")[2]) for t in running]
        assert len(set(workers)) == 2
        deadline = time.monotonic() + 30
        while not all(_gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(_gone(pid) for pid in workers), "the workers outlived their parent"
        # the trials they were running are failed, not left RUNNING, and none was added
        trials = _recorded("orphans", runs_dir=tmp_path)
        assert [t.number for t in trials] == [t.number for t in running]
        assert [t.state for t in trials] == [TrialState.FAIL] * 2
    finally:
        parent.kill()
        for pid in workers:  # only the workers this test started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("90", 90), ("1h30m", 5400)])
def test_timeout_takes_minutes_and_hours(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["30x", "m", "", "0s"])
def test_bad_timeout_gets_one_clear_message(text):
    with pytest.raises(DigitlabError, match="a duration looks like 90s, 30m"):
        parse_duration(text)
