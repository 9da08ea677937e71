"""`digitlab experiment`: variants × seeds trained as ordinary runs, compared with uncertainty."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from digitlab.cli.app import app, console, err_console, print_json
from digitlab.cli.options import DataDirOption, JsonOption, RunsDirOption, choices
from digitlab.errors import DigitlabError
from digitlab.experiments.schema import LEARNING_RATE_POLICIES
from digitlab.files import check_output_folder

# -------------------------------------------------------------------------- experiment (helper)
SMOKE = (
    "A smoke run (--quick): too small to conclude anything; it checks that every variant trains."
)
LearningRatePolicy = choices("LearningRatePolicy", LEARNING_RATE_POLICIES)

NameArgument = typer.Argument(
    ...,
    metavar="NAME",
    help="dropout, batch-size, normalization, dropout-size, a TOML file, `list`, or `status`.",
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
    help="A smoke run: a tiny budget (1 epoch, 1 seed, 600 digits; batch-size and "
    "dropout-size 1,250), each "
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
WorkersOption = typer.Option(
    None,
    "--workers",
    min=1,
    help="Worker processes training the cells on this machine; with 2 or more, or with "
    "--storage, the cells are the trials of an Optuna study that workers claim [default: 1, "
    "all in this process].",
)
ExperimentStorageOption = typer.Option(
    None,
    "--storage",
    envvar="DIGITLAB_EXPERIMENT_STORAGE",
    help="Where the cells are shared: a database URL, postgresql://HOST/DB, that the same "
    "command on other machines joins, or a journal file [default: experiment.journal in the "
    "experiment folder].",
)
GuessOption = typer.Option(
    None,
    "--guess",
    help="Your own prediction before the runs, stored and shown beside the result [default: "
    "asked for on a terminal].",
)
MAX_GUESS = 500  # characters, as the record keeps it


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
    guess: str | None = GuessOption,
    workers: int | None = WorkersOption,
    storage: str | None = ExperimentStorageOption,
    runs_dir: Path | None = RunsDirOption,
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Run a controlled experiment: variants × seeds trained as normal runs, compared with their
    uncertainty, in `RUNS_DIR/experiments/TIMESTAMP-NAME/` (experiment.json, plots, report).

    Examples:

    * `digitlab experiment list`
    * `digitlab experiment dropout` (≤ 10 minutes on 2 cores; `--quick`: a smoke run)
    * `digitlab experiment batch-size --lr-policy linear`
    * `digitlab experiment dropout-size` (dropout with 500 to 20,000 training digits)
    * `digitlab experiment dropout --resume` (or `--resume latest`, or `--resume FOLDER`)
    * `digitlab experiment my.toml` (variants as spec overrides; see the README)
    * `digitlab experiment dropout --workers 2` (2 processes; the cells in a study)
    * `digitlab experiment dropout --storage postgresql://db-host/digitlab` (every machine joins)
    * `digitlab experiment status` (cells done, running, failed and to do)
    """
    if name == "list":
        _list_definitions(runs_dir, as_json)
        return
    if name == "status":
        _status(where, storage, runs_dir, as_json)
        return
    name, definition = _checked(name, runs_dir, quick)  # 'Dropout' is dropout
    resume_from = _resume_from(name, where, resume=resume, quick=quick)
    if quick:  # after every input is checked: a refusal stays one line
        err_console.print(SMOKE, highlight=False, markup=False)
    from digitlab.experiments.launch import run

    outcome = run(
        definition,
        workers=workers,
        storage=storage,
        seeds=seeds,
        epochs=epochs,
        train_samples=train_samples,
        quick=quick,
        learning_rate_policy=lr_policy.value if lr_policy else None,
        runs_dir=runs_dir,
        resume=resume_from,
        data_dir=data_dir,
        console=err_console,
        guess=_guess(guess, resume=resume, ask=not as_json),
    )
    again = f" --storage {storage}" * bool(storage) + f" --workers {workers}" * bool(workers)
    _print_outcome(name + again, outcome, as_json)


def _checked(name: str, runs_dir: Path | None, quick: bool):
    """The experiment's name as the built-ins spell it, and its definition; the runs
    folder checked."""
    from digitlab.experiments.definitions import canonical_name, load_definition

    name = canonical_name(name)
    definition = load_definition(name)
    if runs_dir is not None:
        check_output_folder(runs_dir)
    return name, definition


def _status(where: str | None, storage: str | None, runs_dir: Path | None, as_json: bool):
    """`digitlab experiment status`: the experiments of the runs folder, or of a storage."""
    from digitlab.experiments import status

    if where is not None:
        raise DigitlabError(
            f"unexpected argument '{where}'; `digitlab experiment status` takes --storage or "
            "--runs-dir"
        )
    found = status.of_storage(storage) if storage else status.of_runs_folder(runs_dir)
    if as_json:
        print_json([progress.as_dict() for progress in found])
    else:
        status.print_status(console, found)


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


def _guess(guess: str | None, *, resume: bool, ask: bool) -> str | None:
    """The learner's guess: `--guess`, else asked for on a terminal (Enter skips); refused
    with `--resume` (a guess is made before the runs) and when longer than `MAX_GUESS`."""
    import sys

    if guess is not None and resume:
        raise DigitlabError("a guess is made before the runs; --resume continues runs made")
    if guess is None and ask and not resume and sys.stdin.isatty() and sys.stderr.isatty():
        guess = typer.prompt(
            "What do you expect? Your guess before the runs (Enter to skip)",
            default="",
            show_default=False,
            err=True,
        )
    guess = (guess or "").strip() or None
    if guess is not None and len(guess) > MAX_GUESS:
        raise DigitlabError(f"--guess is {len(guess)} characters; keep it under {MAX_GUESS}")
    return guess


def _print_prediction(record) -> None:
    """The prediction made before the runs and its verdict, and the learner's guess."""
    say = lambda text, **style: console.print(  # noqa: E731
        text, highlight=False, markup=False, soft_wrap=True, **style
    )
    prediction = record.prediction
    if prediction is not None:
        say("Predicted before the runs:", style="bold")
        for line in prediction.statement:
            say(f"  {line}")
        say(f"  → {prediction.sentence}", style="bold")
    if record.guess:
        say(f"Your guess before the runs: {record.guess}", style="bold")


def _print_outcome(name: str, outcome, as_json: bool) -> None:
    """The experiment's record (table or JSON); an interrupted one also says how to go on,
    on stderr, and exits with 130."""
    from digitlab.experiments.views import print_record

    if as_json:
        print_json(json.loads(outcome.record.model_dump_json()))
    else:
        print_record(console, outcome.record, outcome.folder)
        _print_prediction(outcome.record)
    if outcome.interrupted:
        err_console.print(
            f"Interrupted; the finished runs are kept. Continue with: "
            f"digitlab experiment {name} --resume {outcome.folder}",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(130)
