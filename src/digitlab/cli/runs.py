"""`digitlab runs`, `report`, `compare` and `board`: the runs folder, read and shown."""

from __future__ import annotations

from pathlib import Path

import typer

from digitlab.cli.app import app, console, err_console, print_json
from digitlab.cli.options import JsonOption, RunsDirOption, port_option


# ---------------------------------------------------------------------------------------- runs
@app.command("runs")
def list_runs_command(runs_dir: Path | None = RunsDirOption, as_json: bool = JsonOption) -> None:
    """List runs with their key figures, newest first: the runs folder's own, then each
    experiment's (RUNS_DIR/experiments/*/runs/), under its folder's name. A broken run folder
    is listed as unreadable, with the reason, and the others still show.

    Run names are shown whole, even in an 80-column pipe, as commands take them: an
    experiment's run by its own name, or EXPERIMENT/RUN where two experiments share it.
    Validation accuracy and loss (the last epoch's) appear for runs trained with a
    validation split. With --json, each run's `experiment` is its experiment's folder name
    (null outside experiments).

    Example: `digitlab runs`
    """
    from digitlab.runs import listing

    runs = listing(runs_dir)
    if as_json:
        print_json(runs.rows)
        return
    runs.print(console)


# ---------------------------------------------------------------------- report, compare (helper)
@app.command("report")
def report_command(
    target: str = typer.Argument(
        ...,
        help="A run (its path, its name as `digitlab runs` shows it, or latest) or an "
        "experiment (its folder, or its name in RUNS_DIR/experiments).",
    ),
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """(Re)write the report.html of a run or an experiment: one self-contained page to open
    in a browser, offline (config, metrics, per-class report, curves, confusion matrices and
    mistakes; for an experiment its question, conclusion, table, plots and its runs).

    Examples: `digitlab report latest`, `digitlab report runs/experiments/20260101-120000-dropout`
    """
    from digitlab.report import write_report

    console.print(f"wrote {write_report(target, runs_dir)}", highlight=False, markup=False)


@app.command("compare")
def compare_command(
    runs: list[str] = typer.Argument(
        ..., help="Two or more runs: their paths, names (as `digitlab runs` shows them), or latest."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Folder to write [default: RUNS_DIR/compare-TIMESTAMP]."
    ),
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """Compare runs side by side: their training and validation curves overlaid, one panel
    per metric, and a table of the config fields that differ, then test accuracy, loss,
    seconds and epochs. Writes compare.png and compare.html; prints the table.

    Runs on different datasets or with different metrics are refused.

    Example: `digitlab compare 20260101-120000-seed 20260101-121500-seed latest`
    """
    from digitlab.report import compare, default_out_dir
    from digitlab.runs import default_runs_dir, load_run

    loaded = [load_run(ref, runs_dir) for ref in runs]
    result = compare(loaded, out or default_out_dir(runs_dir or default_runs_dir()))
    console.print(result)  # its table: Comparison.__rich__
    console.print(f"wrote {result.png}", highlight=False, markup=False)
    console.print(f"wrote {result.html}", highlight=False, markup=False)


# ------------------------------------------------------------------- board, dashboard (helper)
@app.command("board")
def board_command(
    runs_dir: Path | None = typer.Argument(
        None,
        envvar="DIGITLAB_RUNS_DIR",
        show_default=False,
        help="Folder of runs [default: ./runs].",
    ),
    port: int = port_option(6006),
) -> None:
    """Show every run in TensorBoard: scalars per epoch, weight and activation histograms,
    the confusion matrix and misclassified gallery, the config. Needs `pip install
    'digitlab[board]'`; serves on 127.0.0.1 until Ctrl-C.

    Example: `digitlab board runs --port 6006`
    """
    from digitlab.board import start_tensorboard, wait_for_interrupt

    say = lambda line: err_console.print(line, highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    url = start_tensorboard(runs_dir, port=port, on_skipped=say)  # runs it can't show, named
    console.print(f"TensorBoard on {url}  (Ctrl-C stops)", highlight=False, markup=False)
    wait_for_interrupt()
