"""An experiment's progress on the terminal."""

from __future__ import annotations

import sys

from digitlab.runs import Run


class Progress:
    """A Rich progress bar over all epochs of all runs (ETA) on a terminal; otherwise one
    line per finished run."""

    def __init__(self, console, total_epochs: int, total_runs: int, live: bool | None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal if live is None else live
        self.total_runs, self.finished = total_runs, 0
        self.bar = None
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("epochs"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task("experiment", total=total_epochs)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def starting(self, label: str) -> None:
        if self.bar is not None:
            self.bar.update(
                self.task, description=f"[{self.finished + 1}/{self.total_runs}] {label}"
            )

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def diverged(self, label: str) -> None:
        self.finished += 1
        text = f"[{self.finished}/{self.total_runs}] {label}: diverged (the loss became NaN)"
        if self.bar is not None:
            self.bar.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=sys.stderr if self.console.stderr else sys.stdout, flush=True)

    def finished_run(self, label: str, run: Run) -> None:
        self.finished += 1
        accuracy = run.metrics.test_accuracy
        text = (
            f"[{self.finished}/{self.total_runs}] {label}: "
            + (f"test accuracy {accuracy:.2%}" if accuracy is not None else run.status)
            + f", {run.metrics.train_seconds:.1f} s ({run.name})"
        )
        if self.bar is not None:
            self.bar.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=sys.stderr if self.console.stderr else sys.stdout, flush=True)
