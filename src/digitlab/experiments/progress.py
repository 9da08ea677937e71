"""An experiment's progress on the terminal, its ETA weighted by what each run costs."""

from __future__ import annotations

import sys

from digitlab.runs import Run

# A rough model of the seconds a run takes on a CPU, measured on 2 cores with the notebook's
# network (99k weights) and a 2×1024 one (2.9M): an epoch costs digits × weights (the
# matrix products, forward and backward) plus a fixed cost per update (the dispatch of a
# step inside the compiled loop) plus a fixed cost per epoch (validation, the training loss
# with dropout off, callbacks); a run adds its building, test evaluation and saving. Only the
# ratios matter: the bar's ETA is the cost left over the cost done per second so far, so a
# wide network's epochs count for more than the notebook's instead of making the ETA jump.
SECONDS_PER_DIGIT_WEIGHT = 1.2e-10
SECONDS_PER_UPDATE = 2e-5
SECONDS_PER_EPOCH = 0.02
SECONDS_PER_RUN = 1.5


def epoch_cost(weights: int, digits: int, updates: int) -> float:
    """The estimated seconds of one epoch: `digits` trained on by a network of `weights`
    parameters in `updates` steps."""
    return (
        digits * weights * SECONDS_PER_DIGIT_WEIGHT
        + updates * SECONDS_PER_UPDATE
        + (SECONDS_PER_EPOCH)
    )


class Progress:
    """A Rich progress bar over all runs' estimated cost (ETA) on a terminal, showing the
    epochs done of all epochs; otherwise one line per finished run.

    Args:
        console: where to print (default: stderr).
        total_cost: the estimated seconds of everything still to train (`epoch_cost` per
            epoch, SECONDS_PER_RUN per run).
        total_epochs, total_runs: what the bar counts in words.
        live: force the bar on or off (default: on a terminal only).
    """

    def __init__(
        self, console, total_cost: float, total_epochs: int, total_runs: int, live: bool | None
    ):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal if live is None else live
        self.total_runs, self.finished = total_runs, 0
        self.total_epochs, self.epochs = total_epochs, 0
        self.bar = None
        if self.live:
            from rich.progress import (
                BarColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[epochs]} epochs"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task(
                "experiment", total=max(total_cost, 1e-9), epochs=self._epochs()
            )

    def _epochs(self) -> str:
        return f"{self.epochs}/{self.total_epochs}"

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

    def advance(self, cost: float = 1.0) -> None:
        """One epoch done, of estimated `cost` seconds."""
        self.epochs += 1
        if self.bar is not None:
            self.bar.update(self.task, advance=cost, epochs=self._epochs())

    def _line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.advance(self.task, SECONDS_PER_RUN)
            self.bar.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=sys.stderr if self.console.stderr else sys.stdout, flush=True)

    def diverged(self, label: str) -> None:
        self.finished += 1
        self._line(f"[{self.finished}/{self.total_runs}] {label}: diverged (the loss became NaN)")

    def finished_run(self, label: str, run: Run) -> None:
        self.finished += 1
        accuracy = run.metrics.test_accuracy
        validation = (run.history.get("val_accuracy") or [None])[-1]
        figure = f"test accuracy {accuracy:.2%}" if accuracy is not None else run.status
        if validation is not None:
            figure += f", validation {validation:.2%}"
        self._line(
            f"[{self.finished}/{self.total_runs}] {label}: {figure}, "
            f"{run.metrics.train_seconds:.1f} s ({run.name})"
        )
