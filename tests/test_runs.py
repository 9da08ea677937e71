"""The run directory: atomic creation, listing, loading by path, name or "latest"."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from runfiles import config as _config
from runfiles import fake_run as _fake_run

from digitlab.errors import RunError
from digitlab.files import atomic_path
from digitlab.runs import (
    claim_run_path,
    list_runs,
    load_run,
    read_history,
    recover,
    staged_run,
    write_history,
)


def test_staged_run_appears_only_when_complete(tmp_path):
    final = tmp_path / "20260101-000000-x"
    with pytest.raises(RuntimeError), staged_run(final) as staging:
        (staging / "model.keras").write_text("half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with staged_run(final) as staging:
        (staging / "config.json").write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == [final.name]


def test_staged_run_replaces_an_existing_run_only_on_success(tmp_path):
    final = _fake_run(tmp_path / "run", "2026")
    with pytest.raises(RuntimeError), staged_run(final) as staging:
        (staging / "config.json").write_text('{"new": true}')
        raise RuntimeError
    assert json.loads((final / "config.json").read_text())["created"].startswith("2026")
    with staged_run(final) as staging:
        (staging / "config.json").write_text('{"new": true}')
    assert json.loads((final / "config.json").read_text()) == {"new": True}
    assert [p.name for p in tmp_path.iterdir()] == ["run"]


def test_staging_left_by_a_killed_process_is_removed(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stale = tmp_path / f".staging-{dead}-abc"
    stale.mkdir()
    with staged_run(tmp_path / "new") as staging:
        (staging / "config.json").write_text("{}")
    assert not stale.exists()


def test_list_runs_newest_first_and_skips_non_runs(tmp_path):
    _fake_run(tmp_path / "a", "2026-01-01T00:00:00")
    _fake_run(tmp_path / "b", "2026-02-01T00:00:00")
    (tmp_path / "notes").mkdir()
    (tmp_path / ".staging-1-x").mkdir()
    assert [run.name for run in list_runs(tmp_path)] == ["b", "a"]
    assert load_run("latest", tmp_path).name == "b"
    assert load_run("a", tmp_path).metrics.test_accuracy == 0.9


def test_missing_runs_give_clear_errors(tmp_path):
    with pytest.raises(RunError, match="no readable runs in"):
        load_run("latest", tmp_path)
    with pytest.raises(RunError, match="run 'nope' not found"):
        load_run("nope", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="is not a digitlab run"):
        load_run(tmp_path / "empty")
    broken = _fake_run(tmp_path / "broken", "2026")
    (broken / "config.json").write_text("{")
    with pytest.raises(RunError, match="broken/config.json: .*(EOF|JSON)"):
        load_run(broken)


def test_a_claimed_run_path_is_made_at_once_and_never_reused(tmp_path):
    first = claim_run_path(tmp_path, "my run/1")
    second = claim_run_path(tmp_path, "my run/1")
    assert first.name.endswith("-my-run-1") and second != first
    assert first.is_dir() and second.is_dir()  # each claimed with its own mkdir
    with pytest.raises(RuntimeError), staged_run(first, claimed=True):
        raise RuntimeError("killed")
    assert not first.exists()  # a failed run gives its claim back


def test_a_new_run_never_replaces_a_folder_it_did_not_claim(tmp_path):
    final = claim_run_path(tmp_path, "x")
    (final / "notes.txt").write_text("mine")  # something else filled the claim meanwhile
    with (
        pytest.raises(RunError, match="was filled by something else.*kept as .*x-2"),
        staged_run(final, claimed=True) as staging,
    ):
        (staging / "config.json").write_text('{"new": true}')
    assert [p.name for p in final.iterdir()] == ["notes.txt"]  # untouched
    assert (tmp_path / f"{final.name}-2" / "config.json").read_text() == '{"new": true}'


CLAIMER = """
import sys
from pathlib import Path
from digitlab.runs import staged_run
final, complete = Path(sys.argv[1]), sys.argv[2] == "1"
with staged_run(final, claimed=True) as staging:
    if complete:
        (staging / "config.json").write_text("{}")
    else:
        import os, signal
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("complete", [True, False])
def test_a_kill_while_a_new_run_is_written_leaves_the_run_or_nothing(tmp_path, complete):
    final = claim_run_path(tmp_path, "seed")
    env = {**os.environ, "DIGITLAB_TEST_CRASH_AT": "before-swap"}
    args = [sys.executable, "-c", CLAIMER, str(final), str(int(complete))]
    assert subprocess.run(args, env=env, check=False).returncode == -9
    recover(tmp_path)  # what the next write in this folder does first
    if complete:  # the finished run goes onto its own claim
        assert [p.name for p in tmp_path.iterdir()] == [final.name]
        assert sorted(p.name for p in final.iterdir()) == ["config.json"]
    else:  # half a run: nothing of it is left, not even the empty claim
        assert list(tmp_path.iterdir()) == []


def test_two_runs_named_alike_finishing_in_the_same_second_are_both_kept(
    tmp_path, monkeypatch, mnist
):
    """A second `train --name same` finishes while the first is being written, within the
    same second: each keeps its own folder (one used to replace the other)."""
    from datetime import datetime

    from digitlab import training
    from digitlab.presets import get_preset
    from digitlab.runs import staging

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return cls(2026, 1, 1, 12, 0, 0)

    monkeypatch.setattr(staging, "datetime", Frozen)
    spec = get_preset("seed").replace(train={"train_samples": 300, "epochs": 1})
    options = {"runs_dir": tmp_path, "name": "same", "verbose": 0, "pictures": True}  # the report
    real_report, second = training.write_run_report, []

    def report_while_another_finishes(folder, **kwargs):
        if not second:
            second.append(None)
            second[0] = training.train(spec, calibrate=False, **options)
        return real_report(folder, **kwargs)

    monkeypatch.setattr(training, "write_run_report", report_while_another_finishes)
    first = training.train(spec, calibrate=False, **options)
    names = sorted(run.name for run in list_runs(tmp_path))
    assert names == ["20260101-120000-same", "20260101-120000-same-2"]
    assert {first.name, second[0].name} == set(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # nothing else left


def test_history_round_trips(tmp_path):
    history = {"loss": [0.5, 0.25], "accuracy": [0.8, 0.9], "val_loss": [0.6, 0.3]}
    write_history(tmp_path / "h.csv", history)
    assert (tmp_path / "h.csv").read_text().splitlines()[0] == "epoch,loss,accuracy,val_loss"
    assert read_history(tmp_path / "h.csv") == history


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.write_text("new")
        raise ValueError
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


# ------------------------------------------------------------------------------ the listing
def _console(width: int = 80):
    import io

    from rich.console import Console

    return Console(file=io.StringIO(), width=width, color_system=None)


def test_listing_rows_hold_a_good_runs_figures_and_a_broken_runs_reason(tmp_path):
    from digitlab.runs import listing

    good = _fake_run(tmp_path / "20260101-000000-seed", "2026-01-01T00:00:00", accuracy=0.9)
    write_history(good / "history.csv", {"loss": [0.5], "val_accuracy": [0.8], "val_loss": [0.4]})
    broken = _fake_run(tmp_path / "20260102-000000-broken", "2026-01-02T00:00:00")
    (broken / "metrics.json").write_text("[1, 2]")
    rows = listing(tmp_path).rows
    assert rows[0] == {
        "run": str(good),
        "name": good.name,
        "status": "complete",
        "network": "seed",
        "dataset": "mnist",
        "epochs": 1,
        "test_accuracy": 0.9,
        "val_accuracy": 0.8,
        "val_loss": 0.4,
        "train_seconds": 0.0,
        "experiment": None,  # a run of the runs folder itself, not of an experiment
    }
    assert set(rows[1]) == {"run", "name", "status", "reason", "experiment"}
    assert rows[1]["status"] == "unreadable" and "metrics.json" in rows[1]["reason"]
    assert listing(tmp_path / "none").rows == []


def test_listing_prints_a_header_the_table_and_unreadable_runs_below(tmp_path):
    from digitlab.runs import listing

    _fake_run(tmp_path / "20260101-000000-a-rather-long-run-name-that-is-never-cut", accuracy=0.9)
    broken = _fake_run(tmp_path / "b", "2026-01-02T00:00:00")
    (broken / "config.json").write_text("{")
    console = _console(width=200)
    listing(tmp_path).print(console)
    lines = console.file.getvalue().splitlines()
    assert lines[0] == f"runs in {tmp_path}/ (mnist), newest first"
    narrow = _console(width=40)
    listing(tmp_path).print(narrow)  # the table grows past 40 columns rather than cut a name
    row = next(line for line in narrow.file.getvalue().splitlines() if "a-rather-long" in line)
    assert "20260101-000000-a-rather-long-run-name-that-is-never-cut" in row
    assert row.split()[1:4] == ["seed", "1", "90.00%"] and row.split()[-1] == "0.0"
    assert "status" not in console.file.getvalue()  # every readable run is complete
    assert lines[-1].startswith("unreadable b: ") and "config.json" in lines[-1]
    empty = _console()
    listing(tmp_path / "none").print(empty)
    assert empty.file.getvalue() == "no runs yet; train one with `digitlab train`\n"


# ------------------------------------------------------------------- one owner for each file
def test_a_run_stores_its_calibration_and_reads_the_directions_back(tmp_path):
    import numpy as np

    from digitlab.runs import STATS_FILE, read_run

    run = read_run(_fake_run(tmp_path / "run"))
    assert run.thresholds == {}
    stats = {"means": np.ones((10, 4), np.float32), "components": np.zeros((10, 2, 4), np.float32)}
    run.store_calibration({"unsure_margin": 0.1}, stats)
    assert run.thresholds == {"unsure_margin": 0.1}  # the Run in hand sees them at once
    again = load_run(run.path)
    assert again.thresholds == {"unsure_margin": 0.1}
    assert again.metrics.test_accuracy == 0.9  # the rest of the run is untouched
    assert np.array_equal(again.confidence_stats()["means"], stats["means"])
    assert sorted(p.name for p in run.path.iterdir()) == [STATS_FILE, "config.json", "metrics.json"]


@pytest.mark.parametrize("content", [None, b"not numpy"])
def test_missing_or_damaged_confidence_directions_are_one_line_refusals(tmp_path, content):
    from digitlab.runs import STATS_FILE, read_run

    run = read_run(_fake_run(tmp_path / "run"))
    if content is not None:
        (run.path / STATS_FILE).write_bytes(content)
    with pytest.raises(RunError, match="digitlab calibrate run") as caught:
        run.confidence_stats()
    assert "\n" not in str(caught.value)


def test_the_inspect_summary_round_trips_through_the_run(tmp_path):
    from digitlab.runs import INSPECT_DIR, read_run, write_inspect_summary

    run = read_run(_fake_run(tmp_path / "run"))
    assert run.inspect_summary() is None
    written = write_inspect_summary(run.path / INSPECT_DIR, {"digits": 3, "layers": []})
    assert written == run.path / "inspect" / "inspect.json"
    assert run.inspect_summary() == {"digits": 3, "layers": []}
    written.write_text("{")
    with pytest.raises(RunError, match="inspect.json is not JSON"):
        run.inspect_summary()


def test_run_files_are_written_config_last_and_read_back_before_the_config_exists(tmp_path):
    from digitlab.runs import read_run, write_run_files
    from digitlab.schema import RunConfig

    config = RunConfig.model_validate(_config())
    folder = tmp_path / "staging"
    folder.mkdir()
    write_run_files(folder, history={"loss": [0.5, 0.25]}, metrics={"test_accuracy": 0.8})
    assert not (folder / "config.json").exists()
    staged = read_run(folder, config)  # a report drawn before the config is written
    assert staged.history == {"loss": [0.5, 0.25]} and staged.metrics.test_accuracy == 0.8
    write_run_files(folder, config=config)
    assert load_run(folder).config == config


def test_a_staging_folder_is_named_after_the_run_it_becomes(tmp_path):
    from digitlab.runs import run_name

    final = tmp_path / "20260101-000000-seed"
    with staged_run(final) as staging:
        assert staging.name != final.name and run_name(staging) == final.name
    assert run_name(final) == final.name
