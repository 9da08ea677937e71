"""The `digitlab runs` view: one row of key figures per run, and the tables a person reads;
and `next_steps`, the lines a finished command ends with.

`listing(runs_dir).rows` is what `digitlab runs --json` prints; `.print(console)` draws the
tables: the runs folder's own runs, then each experiment's. Readable runs come newest first,
then each unreadable folder with its reason.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digitlab.runs.folder import REPORT_FILE
from digitlab.runs.run import (
    EXPERIMENT_RUNS_FOLDER,
    Run,
    UnreadableRun,
    default_runs_dir,
    experiment_folders,
    run_ref,
    scan_runs,
)

UNREADABLE = "unreadable"


@dataclass(frozen=True)
class RunsListing:
    """Every run in `runs_dir` and in its experiments, as rows of plain values (JSON-ready).

    A row's `name` is what commands take (`run_ref`); its `experiment` is the experiment's
    folder name in RUNS_DIR/experiments, or None for a run of the runs folder itself.
    """

    runs_dir: Path
    rows: list[dict[str, Any]]

    def print(self, console) -> None:
        """Print the tables on a `rich.console.Console`: the runs folder's own runs, then one
        table per experiment (newest first), its folder's name above it.

        They fit 80 columns: a run's name is never cut (names tell runs apart), numbers never
        wrap, the status and dataset columns show only when they differ, unreadable runs go
        below their table with their reason.
        """
        from rich.markup import escape

        if not self.rows:
            console.print("no runs yet; train one with `digitlab train`")
            return
        good = [row for row in self.rows if row["status"] != UNREADABLE]
        datasets = sorted({row["dataset"] for row in good})
        on = f" ({datasets[0]})" if len(datasets) == 1 else ""
        console.print(f"runs in {escape(str(self.runs_dir))}/{on}, newest first", highlight=False)
        for experiment in dict.fromkeys(row["experiment"] for row in self.rows):
            rows = [row for row in self.rows if row["experiment"] == experiment]
            if experiment is not None:  # its folder's name: `digitlab report` takes it
                runs = "1 run" if len(rows) == 1 else f"{len(rows)} runs"
                console.print(f"experiment {escape(experiment)}: {runs}", highlight=False)
            self._print_group(console, rows, datasets, network=experiment is None)

    def _print_group(
        self, console, rows: list[dict[str, Any]], datasets: list[str], network: bool
    ) -> None:
        from rich.console import Console
        from rich.markup import escape
        from rich.measure import Measurement

        good = [row for row in rows if row["status"] != UNREADABLE]
        if good:  # wider than the terminal only when names are: then no figure is cut either
            table = self._table(good, datasets, network)
            natural = Measurement.get(console, console.options.update(width=10_000), table).maximum
            Console(width=max(console.width, natural), file=console.file).print(table)
        for row in rows:
            if row["status"] == UNREADABLE:
                console.print(
                    f"[red]unreadable[/red] {escape(row['name'])}: {escape(row['reason'])}",
                    highlight=False,
                    soft_wrap=True,
                )

    def _table(self, good: list[dict[str, Any]], datasets: list[str], network: bool):
        """One group's table. An experiment's has no network column: its runs' names say
        their variant (`<timestamp>-<variant>-seed<N>`), so a table of them fits 80 columns."""
        from rich import box
        from rich.markup import escape
        from rich.table import Table

        show_status = any(row["status"] not in ("complete", UNREADABLE) for row in self.rows)
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
        table.add_column("run", no_wrap=True, min_width=max(len(r["name"]) for r in good))
        if show_status:
            table.add_column("status", no_wrap=True)
        if network:
            table.add_column("network", no_wrap=True)
        if len(datasets) > 1:
            table.add_column("dataset", no_wrap=True)
        for title in ("epochs", "test\nacc", "val\nacc", "val\nloss", "train\ns"):
            table.add_column(title, justify="right", no_wrap=True)
        for row in good:
            table.add_row(
                escape(row["name"]),
                *([row["status"]] if show_status else []),
                *([escape(row["network"])] if network else []),
                *([row["dataset"]] if len(datasets) > 1 else []),
                str(row["epochs"]),
                _fraction(row["test_accuracy"], ".2%"),
                _fraction(row["val_accuracy"], ".2%"),
                _fraction(row["val_loss"], ".4f"),
                f"{row['train_seconds']:.1f}",
            )
        return table


def _fraction(value: float | None, form: str) -> str:
    return format(value, form) if value is not None else "–"


def run_row(run: Run) -> dict[str, Any]:
    """A readable run's row: its path, name, status and key figures (None where absent)."""
    history = run.history
    return {
        "run": str(run.path),
        "name": run.name,
        "status": run.status,
        "network": run.spec.name,
        "dataset": run.dataset.name,
        "epochs": run.epochs_done,
        "test_accuracy": run.metrics.test_accuracy,
        "val_accuracy": (history.get("val_accuracy") or [None])[-1],
        "val_loss": (history.get("val_loss") or [None])[-1],
        "train_seconds": run.metrics.train_seconds,
    }


def listing(runs_dir: str | Path | None = None) -> RunsListing:
    """Every run in `runs_dir` (default: `default_runs_dir()`) and in each of its experiments
    (RUNS_DIR/experiments/*/runs/), as `digitlab runs` shows them: the runs folder's own
    first, then each experiment's, newest experiment first; in each, readable runs newest
    first, then unreadable ones with the reason.

    Raises:
        RunError: a folder exists but can't be listed.
    """
    where = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    groups = [(None, scan_runs(where))]
    groups += [(f.name, scan_runs(f / EXPERIMENT_RUNS_FOLDER)) for f in experiment_folders(where)]
    rows = []
    for experiment, runs in groups:
        for run in runs:
            name = run.name if experiment is None else run_ref(run.path, where)
            rows.append({**_row(run), "name": name, "experiment": experiment})
    return RunsListing(runs_dir=where, rows=rows)


def _row(run: Run | UnreadableRun) -> dict[str, Any]:
    if isinstance(run, Run):
        return run_row(run)
    return {"run": str(run.path), "name": run.name, "status": run.status, "reason": run.reason}


def next_steps(run: Run, commands: tuple[str, ...] = ("evaluate", "serve")) -> list[str]:
    """What `digitlab train` and `digitlab evaluate` end with: where the run's report.html
    is (or how to write it) and the commands to try next on the run, one a line. The run is
    named as `digitlab runs` names it when the default runs folder holds it, else by path.

    Args:
        commands: digitlab commands taking the run as their first argument; the rest of
            each (e.g. "explain --index 0") follows the run.
    """
    where = shlex.quote(run_ref(run.path))
    report = run.path / REPORT_FILE
    lines = [
        f"report: {report}"
        if report.is_file()
        else f"report: write it with `digitlab report {where}`"
    ]
    for i, command in enumerate(commands):
        verb, *rest = command.split()
        lead = "try next: " if i == 0 else " " * len("try next: ")
        lines.append(lead + " ".join(["digitlab", verb, where, *rest]))
    return lines
