"""`digitlab tune`, `tune report` and `tune dashboard`: Optuna studies of networks."""

from __future__ import annotations

from pathlib import Path

import typer

from digitlab.cli.app import app, console
from digitlab.cli.options import (
    DataDirOption,
    Dataset,
    DatasetOption,
    RunsDirOption,
    StorageOption,
    StudyOption,
    choices,
    port_option,
)
from digitlab.schema import PRUNERS

# ---------------------------------------------------------------------------------------- tune
tune_app = typer.Typer(context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(tune_app, name="tune")


Pruner = choices("Pruner", PRUNERS)

SpaceOption = typer.Option(
    None, "--space", help="A TOML file of ranges replacing the default ones."
)
TrialsOption = typer.Option(
    50, "--trials", "-n", help="Finished trials the study should hold; a re-run tops up."
)
EpochsOption = typer.Option(
    None,
    "--epochs",
    "-e",
    help="Epochs per trial: the space's budget, without a space file [default: 10].",
)
TimeoutOption = typer.Option(
    None, "--timeout", help="Start no new trial after this long, e.g. 30m or 2h."
)
WorkersOption = typer.Option(1, "--workers", "-w", help="Worker processes on this machine.")
TrainSamplesOption = typer.Option(
    None, "--train-samples", help="Use only the first N training digits (quick searches)."
)
ValidationSplitOption = typer.Option(
    0.1, "--validation-split", help="Fraction of the training digits that scores trials."
)
SeedOption = typer.Option(0, "--seed", help="Seed of every trial's weights and the sampler.")
PrunerOption = typer.Option(
    Pruner("median"),
    "--pruner",
    metavar="NAME",
    case_sensitive=False,
    help=f"How poor trials stop early: {', '.join(PRUNERS)}.",
)
WarmStartOption = typer.Option(
    True, help="Make a new study's first trial the mlp preset's network (if in the space)."
)


@tune_app.callback(invoke_without_command=True)
def tune_command(
    ctx: typer.Context,
    space_file: Path | None = SpaceOption,
    trials: int = TrialsOption,
    epochs: int | None = EpochsOption,
    timeout: str | None = TimeoutOption,
    study: str = StudyOption,
    storage: str | None = StorageOption,
    workers: int = WorkersOption,
    dataset: Dataset = DatasetOption,
    train_samples: int | None = TrainSamplesOption,
    validation_split: float = ValidationSplitOption,
    seed: int = SeedOption,
    pruner: Pruner = PrunerOption,
    warm_start: bool = WarmStartOption,
    runs_dir: Path | None = RunsDirOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Search networks with Optuna and save the best as a run; `tune report` plots a study.

    Optuna's TPE sampler proposes networks (layers, units, activation, dropout, optimizer,
    learning rate and schedule, batch size); each trains on the training digits less a
    validation split, and trials behind the median after an epoch are pruned. The test set
    is never used to choose. A new study's first trial is the mlp preset's network
    (`--no-warm-start` leaves it out). A live table shows the trials; the best is trained again and
    saved as a run for `evaluate`, `predict` and `serve`. Re-running resumes the study;
    machines that run the same command with the same `--storage` URL share it.

    Examples:

    * `digitlab tune --trials 50 --timeout 30m --workers 2`
    * `digitlab tune --trials 5 --epochs 2 --train-samples 6000` (a quick look)
    * `digitlab tune --space space.toml --study wide`
    * `digitlab tune --study wide --storage postgresql://digitlab@db-host/digitlab`
    * `digitlab tune report --study wide`
    """
    if ctx.invoked_subcommand is not None:
        return
    from digitlab.search_space import space_from_options
    from digitlab.tune import parse_duration, tune

    result = tune(
        study, space=space_from_options(space_file, epochs), trials=trials,
        timeout=parse_duration(timeout) if timeout is not None else None, workers=workers,
        storage=storage, dataset=dataset.value, train_samples=train_samples,
        validation_split=validation_split, seed=seed, pruner=pruner.value,
        warm_start=warm_start, runs_dir=runs_dir, data_dir=data_dir, console=console,
    )  # fmt: skip
    for line in result.summary():
        console.print(line, highlight=False, markup=False)  # names and params hold [ ]
    if result.interrupted:
        raise typer.Exit(130)


@tune_app.command("report")
def tune_report(
    study: str = StudyOption,
    storage: str | None = StorageOption,
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Folder to write [default: RUNS_DIR/tune-report-STUDY]."
    ),
    top: int = typer.Option(10, "--top", help="How many of the best trials the table lists."),
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """Plot a study (optimization history, parameter importances, parallel coordinates) and
    write its top trials as Markdown and CSV. Below 20 complete trials the importances come
    with a warning: so few trials can't rank the parameters reliably.

    Example: `digitlab tune report --study wide`
    """
    from digitlab.tune.report import report

    written = report(study, storage=storage, runs_dir=runs_dir, out_dir=out, top=top)
    for line in written.summary():
        console.print(line, highlight=False, markup=False)


@tune_app.command("dashboard")
def tune_dashboard(
    study: str = StudyOption,
    storage: str | None = StorageOption,
    port: int = port_option(8080),
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """Browse a study in optuna-dashboard: its trials, history, parameter importances, live
    as workers add trials. Needs `pip install 'digitlab[dashboard]'`; serves on 127.0.0.1
    until Ctrl-C.

    Example: `digitlab tune dashboard --study wide`
    """
    from digitlab.board import start_dashboard

    server, url = start_dashboard(study, storage=storage, runs_dir=runs_dir, port=port)
    console.print(f"optuna-dashboard on {url}  (Ctrl-C stops)", highlight=False, markup=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
