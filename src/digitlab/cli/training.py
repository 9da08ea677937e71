"""`digitlab summary`, `train` and `evaluate`: build a network, train it, measure it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import typer

from digitlab.cli.app import app, console, count, err_console, print_json
from digitlab.cli.options import (
    DataDirOption,
    Dataset,
    JsonOption,
    PresetOption,
    RunArgument,
    RunsDirOption,
    SpecOption,
)
from digitlab.errors import DigitlabError


@app.command("summary")
def summary(preset: str | None = PresetOption, spec_file: Path | None = SpecOption) -> None:
    """Print a network's Keras summary (layers, output shapes, parameters) without training.

    Examples:

    * `digitlab summary` (the notebook's network)
    * `digitlab summary --spec examples/wide.toml`
    """
    from digitlab.config import resolve_spec
    from digitlab.data import class_names
    from digitlab.model import build_model

    spec = resolve_spec(preset, spec_file)
    train = spec.train
    model = build_model(spec, num_classes=len(class_names(train.dataset)))
    model.summary()
    lr = train.learning_rate if train.learning_rate is not None else "default"
    console.print(
        f"compile: optimizer={train.optimizer} (learning_rate={lr}, "
        f"{train.learning_rate_schedule}), loss={train.loss}, "
        f"metrics={','.join(train.metrics)}; fit: batch_size={train.batch_size}, "
        f"epochs={train.epochs}, validation_split={train.validation_split}"
        + (f", ema_momentum={train.ema_momentum}" if train.ema_momentum is not None else "")
    )


# --------------------------------------------------------------------------------------- train
@app.command("train")
def train(
    preset: str | None = PresetOption,
    spec_file: Path | None = SpecOption,
    epochs: int | None = typer.Option(None, "--epochs", "-e", help="Passes over the data."),
    batch_size: int | None = typer.Option(None, "--batch-size", "-b", help="Mini-batch size."),
    learning_rate: float | None = typer.Option(
        None,
        "--learning-rate",
        "--lr",
        help="The optimizer's step size, e.g. 0.001 [default: the optimizer's own].",
    ),
    learning_rate_schedule: str | None = typer.Option(
        None, "--learning-rate-schedule", help="constant, or cosine (decays to 0 by the end)."
    ),
    optimizer: str | None = typer.Option(
        None, "--optimizer", help="adam, sgd, rmsprop, adagrad, adamw or nadam."
    ),
    loss: str | None = typer.Option(
        None, "--loss", help="A Keras loss by name; the choices are listed above."
    ),
    metrics: str | None = typer.Option(
        None, "--metrics", help="Comma-separated: accuracy, precision, recall."
    ),
    validation_split: float | None = typer.Option(
        None, "--validation-split", help="Fraction of training data held out, e.g. 0.1."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Same seed, same weights and accuracy."),
    early_stopping: int | None = typer.Option(
        None,
        "--early-stopping",
        metavar="PATIENCE",
        help="Stop after PATIENCE epochs without "
        "a better validation loss (needs --validation-split).",
    ),
    train_samples: int | None = typer.Option(
        None, "--train-samples", help="Use only the first N training digits (quick trials)."
    ),
    ema_momentum: float | None = typer.Option(
        None,
        "--ema-momentum",
        help="Keep a moving average of the weights with this momentum, e.g. 0.999, "
        "and save the average.",
    ),
    dataset: Dataset | None = typer.Option(
        None, "--dataset", "-d", metavar="NAME", help="mnist or fashion-mnist."
    ),
    runs_dir: Path | None = RunsDirOption,
    name: str | None = typer.Option(None, "--name", help="Run name after the timestamp."),
    data_dir: Path | None = DataDirOption,
    resume: str | None = typer.Option(
        None, "--resume", metavar="RUN", help="Continue an interrupted run (path, name or latest)."
    ),
) -> None:
    """Train a network, evaluate it on the test set and write a run directory.

    The run holds model.keras, config.json, history.csv, metrics.json and pictures. Ctrl-C
    stops cleanly and keeps what was learned; `--resume RUN` continues it.

    Losses (`--loss`): sparse_categorical_crossentropy (integer labels, the default), or
    categorical_crossentropy, mean_squared_error, mean_absolute_error (labels one-hot
    encoded for you).

    Examples:

    * `digitlab train` (the notebook's network, 10 epochs)
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
        given = {
            "--preset": preset, "--spec": spec_file, "--batch-size": batch_size,
            "--learning-rate": learning_rate, "--learning-rate-schedule": learning_rate_schedule,
            "--optimizer": optimizer, "--loss": loss, "--metrics": metrics,
            "--validation-split": validation_split, "--seed": seed,
            "--early-stopping": early_stopping, "--train-samples": train_samples,
            "--ema-momentum": ema_momentum, "--dataset": dataset, "--name": name,
        }  # fmt: skip
        ignored = [flag for flag, value in given.items() if value is not None]
        if ignored:
            raise DigitlabError(
                f"--resume continues the run with its own spec, so {', '.join(ignored)} "
                "can't be changed; leave them out (only --epochs extends a run)"
            )
        run = training.resume(resume, epochs=epochs, runs_dir=runs_dir, data_dir=data_dir)
    else:
        spec = resolve_spec(
            preset,
            spec_file,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            learning_rate_schedule=learning_rate_schedule,
            optimizer=optimizer,
            loss=loss,
            metrics=[m.strip() for m in metrics.split(",")] if metrics else None,
            validation_split=validation_split,
            seed=seed,
            early_stopping=early_stopping,
            train_samples=train_samples,
            ema_momentum=ema_momentum,
            dataset=dataset.value if dataset else None,
        )
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
    console.print(f"run: {run.path}")


# ------------------------------------------------------------------------------------ evaluate


@app.command("evaluate")
def evaluate(
    run: str = RunArgument,
    runs_dir: Path | None = RunsDirOption,
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Test loss and accuracy, confusion matrix, per-class report, most-confused pairs, pictures.

    Examples:

    * `digitlab evaluate latest`
    * `digitlab evaluate runs/20261124-231500-seed --json`
    """
    from digitlab.evaluation import CONFUSION_PNG, CURVES_PNG, MISCLASSIFIED_PNG
    from digitlab.evaluation import evaluate as evaluate_run
    from digitlab.runs import load_run

    loaded = load_run(run, runs_dir)
    evaluation = evaluate_run(loaded, data_dir=data_dir)
    if as_json:
        print_json({"run": str(loaded.path), **evaluation.to_dict()})
        return
    console.print(f"run {loaded.path}")
    console.print(
        f"test loss {evaluation.loss:.4f}   test accuracy [bold]{evaluation.accuracy:.2%}[/bold]"
        f"   ({len(evaluation.misclassified)} of {len(evaluation.labels)} wrong)"
    )
    console.print("\nconfusion matrix (rows: true label, columns: predicted)")
    typer.echo(np.array2string(evaluation.confusion_matrix, max_line_width=200))
    typer.echo("\n" + evaluation.report_text())
    pairs = ", ".join(
        f"{p['true']}→{p['predicted']} ({p['count']})" for p in evaluation.most_confused()
    )
    console.print(f"most confused: {pairs or 'none'}")
    for picture in (CONFUSION_PNG, MISCLASSIFIED_PNG, CURVES_PNG):
        if (loaded.path / picture).exists():
            console.print(f"wrote {loaded.path / picture}")
