"""The run directory: atomic creation, listing, loading by path, name or "latest"."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from runfiles import fake_run as _fake_run

from digitlab.errors import RunError
from digitlab.files import atomic_path
from digitlab.runs import list_runs, load_run, new_run_path, read_history, staged_run, write_history


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


def test_new_run_path_never_reuses_a_name(tmp_path):
    first = new_run_path(tmp_path, "my run/1")
    first.mkdir()
    second = new_run_path(tmp_path, "my run/1")
    assert first.name.endswith("-my-run-1") and second != first and not second.exists()


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
    }
    assert set(rows[1]) == {"run", "name", "status", "reason"}
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
