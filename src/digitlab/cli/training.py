"""`digitlab summary`, `train` and `evaluate`: build a network, train it, measure it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from digitlab.cli.app import app, console, count, err_console, print_json
from digitlab.cli.options import (
    DataDirOption,
    JsonOption,
    PresetOption,
    RunArgument,
    RunsDirOption,
    SpecOption,
    flag,
    train_flag_names,
    train_overrides,
    with_train_flags,
)
from digitlab.errors import DigitlabError
from digitlab.schema import TrainConfig


@app.command("summary")
def summary(preset: str | None = PresetOption, spec_file: Path | None = SpecOption) -> None:
    """Print a network's layers (type, size, activation, output shape, parameters) and how it
    would be compiled and fitted, defaults resolved, without training.

    Examples:

    * `digitlab summary` (the notebook's network)
    * `digitlab summary --spec examples/wide.toml`
    """
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from digitlab.config import resolve_spec
    from digitlab.data import class_names
    from digitlab.network import describe

    spec = resolve_spec(preset, spec_file)
    network = describe(spec, num_classes=len(class_names(spec.train.dataset)))  # Keras if need be
    table = Table(title=f"Model: {network.name}", title_justify="left", box=box.SIMPLE_HEAD)
    for column in network.rows[0]:  # long names and shapes wrap whole on a narrow terminal
        wrap = column in ("name", "type", "output shape")
        justify = "right" if column == "params" else "left"
        table.add_column(
            column, justify=justify, overflow="fold" if wrap else "ellipsis", no_wrap=not wrap
        )
    for row in network.rows:
        table.add_row(*(Text(value) for value in row.values()))  # a layer's name may hold [ ]
    console.print(table)
    console.print(f"params: {network.params:,} ({network.trainable:,} trainable)", highlight=False)
    console.print(_compile_and_fit(spec.train), highlight=False, markup=False)


def _compile_and_fit(train: TrainConfig) -> str:
    """`compile: optimizer=adam (learning_rate=0.001, adam's default; constant), ...; fit:
    batch_size=32, ...`: the fit part lists the fields marked `summary="fit"` in the schema,
    those that are set. The default learning rate is Keras's (`network.DEFAULT_LEARNING_RATES`)."""
    from digitlab.network import DEFAULT_LEARNING_RATES

    lr = (
        f"{train.learning_rate:g}"
        if train.learning_rate is not None
        else f"{DEFAULT_LEARNING_RATES[train.optimizer]:g}, {train.optimizer}'s default"
    )
    fit = [
        f"{field}={getattr(train, field)}"
        for field, info in TrainConfig.model_fields.items()
        if isinstance(info.json_schema_extra, dict)
        and info.json_schema_extra.get("summary") == "fit"
        and getattr(train, field) is not None
    ]
    return (
        f"compile: optimizer={train.optimizer} (learning_rate={lr}; "
        f"{train.learning_rate_schedule}), loss={train.loss}, "
        f"metrics={','.join(train.metrics)}; fit: {', '.join(fit)}"
    )


# --------------------------------------------------------------------------------------- train
# What `--resume` may still change: a run continues with its own spec, for more epochs.
RESUME_FLAGS = ("epochs",)


@app.command("train")
@with_train_flags
def train(
    preset: str | None = PresetOption,
    spec_file: Path | None = SpecOption,
    runs_dir: Path | None = RunsDirOption,
    name: str | None = typer.Option(None, "--name", help="Run name after the timestamp."),
    data_dir: Path | None = DataDirOption,
    resume: str | None = typer.Option(
        None, "--resume", metavar="RUN", help="Continue an interrupted run (path, name or latest)."
    ),
    **flags: Any,
) -> None:
    """Train a network, evaluate it on the test set and write a run directory.

    The run holds model.keras, config.json, history.csv, metrics.json, pictures and
    report.html; the command ends with the report's path and two commands to try next.
    Ctrl-C stops cleanly and keeps what was learned; `--resume RUN` continues it.

    Losses (`--loss`): sparse_categorical_crossentropy (integer labels, the default), or
    categorical_crossentropy, mean_squared_error, mean_absolute_error (labels one-hot
    encoded for you).

    Examples:

    * `digitlab train --validation-split 0.1` (the notebook's network, with validation
      curves that can show overfitting)
    * `digitlab train` (exactly the notebook: 10 epochs on all 60,000 digits)
    * `digitlab train --preset fast` (a small convnet: 99.4% in under a minute)
    * `digitlab train --preset cnn` (99.56% in about 8.5 minutes on 2 CPU cores)
    * `digitlab train --epochs 20 --validation-split 0.1 --early-stopping 3`
    * `digitlab train --loss mean_squared_error` (the notebook's one-hot path)
    * `digitlab train --spec net.toml --dataset fashion-mnist`
    * `digitlab train --resume latest`
    """
    from digitlab import training
    from digitlab.config import resolve_spec

    if resume is not None:
        _refuse_with_resume(preset, spec_file, name, flags)
        epochs = flags["epochs"]
        run = training.resume(resume, epochs=epochs, runs_dir=runs_dir, data_dir=data_dir)
    else:
        spec = resolve_spec(preset, spec_file, **train_overrides(flags))
        run = training.train(spec, runs_dir=runs_dir, name=name, data_dir=data_dir)
    if run.status == "interrupted":
        err_console.print(
            f"Interrupted after {run.epochs_done} of {count(run.spec.train.epochs, 'epoch')}; "
            f"what was learned is saved in {run.path}.\n"
            f"Continue with: digitlab train --resume {run.path}"
        )
        raise typer.Exit(130)
    console.print(
        f"test accuracy [bold]{run.metrics.test_accuracy:.2%}[/bold] "
        f"(loss {run.metrics.test_loss:.4f}) after {count(run.epochs_done, 'epoch')}, "
        f"{run.metrics.train_seconds:.1f} s of training"
    )
    console.print(f"run: {run.path}", highlight=False, markup=False)
    _print_next_steps(run, ("evaluate", "serve"))


def _print_next_steps(run, commands: tuple[str, ...]) -> None:
    """The run's report.html and what to try next (`runs.next_steps`)."""
    from digitlab.runs import next_steps

    for line in next_steps(run, commands):
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def _refuse_with_resume(preset, spec_file, name, flags: dict[str, Any]) -> None:
    """A resumed run keeps its spec: every flag given but `RESUME_FLAGS` is refused, by name."""
    given = {
        "preset": preset,
        "spec": spec_file,
        **{field: flags[field] for field in train_flag_names()},
        "name": name,
    }
    refused = [
        flag(key) for key, value in given.items() if value is not None and key not in RESUME_FLAGS
    ]
    if refused:
        raise DigitlabError(
            f"--resume continues the run with its own spec, so {', '.join(refused)} "
            "can't be changed; leave them out (only --epochs extends a run)"
        )


# ------------------------------------------------------------------------------------ evaluate


@app.command("evaluate")
def evaluate(
    run: str = RunArgument,
    runs_dir: Path | None = RunsDirOption,
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Test loss and accuracy, confusion matrix, per-class report, most-confused pairs, pictures.

    Redraws the run's pictures and ends with its report.html and two commands to try next;
    with `--json`, only the figures, as JSON (the pictures are left as they are).

    Examples:

    * `digitlab evaluate latest`
    * `digitlab evaluate runs/20261124-231500-seed --json`
    """
    from digitlab import evaluation as evaluation_module
    from digitlab.runs import load_run

    loaded = load_run(run, runs_dir)
    if as_json:  # the figures alone: no Keras, scikit-learn or matplotlib where NumPy will do
        evaluation = evaluation_module.measure(loaded, data_dir=data_dir)
        print_json({"run": str(loaded.path), **evaluation.to_dict()})
        return
    evaluation = evaluation_module.evaluate(loaded, data_dir=data_dir)
    evaluation.print(console, loaded.path)
    _print_next_steps(loaded, ("explain --index 0", "serve"))
