"""The `digitlab runs` view: one row of key figures per run, and the table a person reads.

`listing(runs_dir).rows` is what `digitlab runs --json` prints; `.print(console)` draws the
table. Readable runs come newest first, then each unreadable folder with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from digitlab.runs.run import Run, default_runs_dir, scan_runs

UNREADABLE = "unreadable"


@dataclass(frozen=True)
class RunsListing:
    """Every run folder in `runs_dir` as a row of plain values (JSON-ready)."""

    runs_dir: Path
    rows: list[dict[str, Any]]

    def print(self, console) -> None:
        """Print the table on a `rich.console.Console`.

        It fits 80 columns: a run's name is never cut (names tell runs apart), numbers never
        wrap, the status and dataset columns show only when they differ, unreadable runs go
        below the table with their reason.
        """
        from rich.console import Console
        from rich.markup import escape
        from rich.measure import Measurement

        if not self.rows:
            console.print("no runs yet; train one with `digitlab train`")
            return
        good = [row for row in self.rows if row["status"] != UNREADABLE]
        datasets = sorted({row["dataset"] for row in good})
        on = f" ({datasets[0]})" if len(datasets) == 1 else ""
        console.print(f"runs in {escape(str(self.runs_dir))}/{on}, newest first", highlight=False)
        if good:  # wider than the terminal only when names are: then no figure is cut either
            table = self._table(good, datasets)
            natural = Measurement.get(console, console.options.update(width=10_000), table).maximum
            Console(width=max(console.width, natural), file=console.file).print(table)
        for row in self.rows:
            if row["status"] == UNREADABLE:
                console.print(
                    f"[red]unreadable[/red] {escape(row['name'])}: {escape(row['reason'])}",
                    highlight=False,
                    soft_wrap=True,
                )

    def _table(self, good: list[dict[str, Any]], datasets: list[str]):
        from rich import box
        from rich.markup import escape
        from rich.table import Table

        show_status = any(row["status"] != "complete" for row in good)
        table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
        table.add_column("run", no_wrap=True, min_width=max(len(r["name"]) for r in self.rows))
        if show_status:
            table.add_column("status", no_wrap=True)
        table.add_column("network", no_wrap=True)
        if len(datasets) > 1:
            table.add_column("dataset", no_wrap=True)
        for title in ("epochs", "test\nacc", "val\nacc", "val\nloss", "train\ns"):
            table.add_column(title, justify="right", no_wrap=True)
        for row in good:
            table.add_row(
                escape(row["name"]),
                *([row["status"]] if show_status else []),
                escape(row["network"]),
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
    """Every run folder in `runs_dir` (default: `default_runs_dir()`), as `digitlab runs`
    shows it: readable runs newest first, then unreadable ones with the reason.

    Raises:
        RunError: the folder exists but can't be listed.
    """
    where = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    rows = []
    for run in scan_runs(runs_dir):
        if isinstance(run, Run):
            rows.append(run_row(run))
        else:
            rows.append(
                {"run": str(run.path), "name": run.name, "status": run.status, "reason": run.reason}
            )
    return RunsListing(runs_dir=where, rows=rows)
