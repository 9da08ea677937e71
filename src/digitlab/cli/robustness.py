"""`digitlab robustness`: a run's accuracy and verdict under MNIST-C's 15 corruptions."""

from __future__ import annotations

from pathlib import Path

import typer

from digitlab.cli.app import app, console, print_json
from digitlab.cli.options import DataDirOption, JsonOption, RunArgument, RunsDirOption
from digitlab.corruptions import CORRUPTIONS
from digitlab.errors import DataError
from digitlab.robustness import DEFAULT_SAMPLES


@app.command("robustness")
def robustness(
    run: str = RunArgument,
    corruption: list[str] | None = typer.Option(
        None,
        "--corruption",
        "-c",
        metavar="NAME",
        help=f"Only these (repeatable, or comma-separated): {', '.join(CORRUPTIONS)} "
        "[default: all 15].",
    ),
    samples: int = typer.Option(
        DEFAULT_SAMPLES, "--samples", "-n", min=1, help="Held-out test digits to measure on."
    ),
    seed: int = typer.Option(
        0, "--seed", min=0, help="Draws the digits and each corruption's randomness."
    ),
    runs_dir: Path | None = RunsDirOption,
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """How the run holds up on digits that leave MNIST: accuracy, the share marked confident,
    the accuracy among those (selective accuracy) and the risk–coverage area (AURC), clean
    and under each of MNIST-C's corruptions (Mu & Gilmer 2019).

    Writes RUN/robustness.json and RUN/robustness.png, and adds a section to the run's
    report.html when it has one.

    Examples:

    * `digitlab robustness latest`
    * `digitlab robustness latest --corruption fog --corruption zigzag --samples 1000 --json`
    """
    from digitlab.corruptions import check_names
    from digitlab.report import write_run_report
    from digitlab.robustness import measure_robustness, save_robustness
    from digitlab.runs import REPORT_FILE, load_run

    names = None
    if corruption:  # a typo is one line before any work
        names = check_names(part for value in corruption for part in value.split(",") if part)
        if not names:
            raise DataError("--corruption needs a name: one of " + ", ".join(CORRUPTIONS))
    loaded = load_run(run, runs_dir)
    result = measure_robustness(loaded, names, samples=samples, seed=seed, data_dir=data_dir)
    save_robustness(loaded, result)
    if (loaded.path / REPORT_FILE).is_file():
        result.files.append(write_run_report(loaded))
    if as_json:
        print_json({**result.to_dict(), "files": [str(path) for path in result.files]})
        return
    result.print(console)
