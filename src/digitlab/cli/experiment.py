"""`digitlab experiment`: variants × seeds trained as ordinary runs, compared with uncertainty."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from digitlab.cli.app import app, console, err_console, print_json
from digitlab.cli.options import DataDirOption, JsonOption, RunsDirOption, choices
from digitlab.errors import DigitlabError
from digitlab.experiments.schema import LEARNING_RATE_POLICIES

# -------------------------------------------------------------------------- experiment (helper)
SMOKE = (
    "A smoke run (--quick): too small to conclude anything; it checks that every variant trains."
)
LearningRatePolicy = choices("LearningRatePolicy", LEARNING_RATE_POLICIES)

NameArgument = typer.Argument(
    ..., metavar="NAME", help="dropout, batch-size, normalization, a TOML file, or `list`."
)
FolderArgument = typer.Argument(
    None, metavar="[FOLDER]", help="With --resume: the experiment folder [default: latest]."
)
SeedsOption = typer.Option(None, "--seeds", help="Seeds per variant (0, 1, ...).")
EpochsOption = typer.Option(None, "--epochs", "-e", help="Epochs of every run.")
TrainSamplesOption = typer.Option(
    None, "--train-samples", help="The first N training digits, validation included."
)
QuickOption = typer.Option(
    False,
    "--quick",
    help="A smoke run: a tiny budget (1 epoch, 1 seed, 600 digits; batch-size 1,250), each "
    "variant at its own learning rate; seconds, too small to conclude anything.",
)
LearningRatePolicyOption = typer.Option(
    None,
    "--lr-policy",
    case_sensitive=False,
    help="tuned: each variant with a rate grid at its best rate on validation; same: each "
    "at its own rate; linear: its rate scaled with the batch size actually used (Goyal et "
    "al. 2017) [default: the experiment's].",
)
ResumeOption = typer.Option(
    False, "--resume", help="Complete an interrupted experiment: train only what is missing."
)


@app.command(
    "experiment",
    context_settings={"help_option_names": ["-h", "--help"]},
)
def experiment_command(
    name: str = NameArgument,
    where: str | None = FolderArgument,
    seeds: int | None = SeedsOption,
    epochs: int | None = EpochsOption,
    train_samples: int | None = TrainSamplesOption,
    quick: bool = QuickOption,
    lr_policy: LearningRatePolicy | None = LearningRatePolicyOption,
    resume: bool = ResumeOption,
    runs_dir: Path | None = RunsDirOption,
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Run a controlled experiment: variants × seeds trained as normal runs, compared with
    their uncertainty, written to `RUNS_DIR/experiments/TIMESTAMP-NAME/` (experiment.json,
    plots, report.html, runs/).

    Examples:

    * `digitlab experiment list`
    * `digitlab experiment dropout` (≤ 10 minutes on 2 cores)
    * `digitlab experiment batch-size --lr-policy linear`
    * `digitlab experiment dropout --seeds 5 --epochs 40 --train-samples 60000`
    * `digitlab experiment dropout --quick`
    * `digitlab experiment dropout --resume` (or `--resume latest`, or `--resume FOLDER`)
    * `digitlab experiment my.toml` (variants as spec overrides; see the README)
    """
    if name == "list":
        _list_definitions(runs_dir, as_json)
        return
    resume_from = _resume_from(name, where, resume=resume, quick=quick)
    if quick:
        err_console.print(SMOKE, highlight=False, markup=False)
    from digitlab.experiments.definitions import load_definition
    from digitlab.experiments.runner import run_experiment

    outcome = run_experiment(
        load_definition(name),
        seeds=seeds,
        epochs=epochs,
        train_samples=train_samples,
        quick=quick,
        learning_rate_policy=lr_policy.value if lr_policy else None,
        runs_dir=runs_dir,
        resume=resume_from,
        data_dir=data_dir,
        console=err_console,
    )
    _print_outcome(name, outcome, as_json)


def _list_definitions(runs_dir: Path | None, as_json: bool) -> None:
    """`digitlab experiment list`: the built-in experiments, as a table or as JSON."""
    from digitlab.experiments.views import definitions_json, print_definitions

    if as_json:
        print_json(definitions_json())
    else:
        print_definitions(console, runs_dir)


def _resume_from(name: str, where: str | None, *, resume: bool, quick: bool) -> str | None:
    """The experiment `--resume` continues (FOLDER, or latest), None without `--resume`; a
    FOLDER without `--resume`, and `--quick` with it, are refused."""
    if where is not None and not resume:
        raise DigitlabError(
            f"unexpected argument '{where}'; only --resume takes a folder, e.g. "
            f"`digitlab experiment {name} --resume latest`"
        )
    if resume and quick:
        raise DigitlabError("--resume continues with the experiment's own budget; drop --quick")
    return (where or "latest") if resume else None


def _print_outcome(name: str, outcome, as_json: bool) -> None:
    """The experiment's record (table or JSON); an interrupted one also says how to go on,
    on stderr, and exits with 130."""
    from digitlab.experiments.views import print_record

    if as_json:
        print_json(json.loads(outcome.record.model_dump_json()))
    else:
        print_record(console, outcome.record, outcome.folder)
    if outcome.interrupted:
        err_console.print(
            f"Interrupted; the finished runs are kept. Continue with: "
            f"digitlab experiment {name} --resume {outcome.folder}",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(130)
