"""Choosing digits to look at: one by its index, or a grid, optionally of one class only.

`digitlab show` draws what `pick_digits` chooses; a notebook can draw the same selection.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.data.registry import DEFAULT_DATASET, class_names
from digitlab.data.sources import load_dataset
from digitlab.errors import DataError

SPLITS = ("train", "test")
MAX_GRID_SIDE = 50  # rows or columns: a bigger grid draws digits too small to read


@dataclass(frozen=True)
class DigitPick:
    """Digits chosen from one split: a single digit, or the first rows×cols of a selection."""

    dataset: str
    split: str  # "train" or "test"
    indices: np.ndarray  # each digit's position in the split
    images: np.ndarray  # (n, height, width) uint8
    labels: np.ndarray  # (n,) the digits' labels
    class_names: tuple[str, ...]  # of the dataset, indexed by label
    grid: tuple[int, int] | None  # (rows, cols); None for a single digit
    label: int | None  # the class the selection holds only, if one was asked for

    @property
    def label_names(self) -> list[str]:
        """Each digit's class name, e.g. `["5", "0"]` or `["Ankle boot"]`."""
        return [self.class_names[k] for k in self.labels]

    @property
    def title(self) -> str:
        """The picture's heading: `train[0]: label 5`, or `mnist test, label 7` for a grid."""
        if self.grid is None:
            return f"{self.split}[{int(self.indices[0])}]: label {self.label_names[0]}"
        heading = f"{self.dataset} {self.split}"
        return heading if self.label is None else f"{heading}, label {self.class_names[self.label]}"

    @property
    def caption(self) -> str:
        """One line under a digit drawn in the terminal: `train digit 0: label 5 (5)`."""
        i, y = int(self.indices[0]), int(self.labels[0])
        return f"{self.split} digit {i}: label {y} ({self.class_names[y]})"

    @property
    def default_path(self) -> Path:
        """Where the picture goes unless told: `digit-train-0.png`, `grid-test-label7.png`."""
        if self.grid is None:
            return Path(f"digit-{self.split}-{int(self.indices[0])}.png")
        suffix = "" if self.label is None else f"-label{self.label}"
        return Path(f"grid-{self.split}{suffix}.png")


def parse_grid(grid: str) -> tuple[int, int]:
    """Read a grid size such as `"10x10"` (or `"10X10"`) as (rows, cols).

    Raises:
        DataError: if it is not two whole numbers joined by an x, or either is outside 1–50.
    """
    try:
        rows, cols = (int(part) for part in grid.lower().split("x"))
    except ValueError:
        raise DataError(f"--grid must look like 10x10, got '{grid}'") from None
    if not (1 <= rows <= MAX_GRID_SIDE and 1 <= cols <= MAX_GRID_SIDE):
        raise DataError(f"--grid rows and columns must be 1–{MAX_GRID_SIDE}, got '{grid}'")
    return rows, cols


def pick_digits(
    name: str = DEFAULT_DATASET,
    split: str = "train",
    index: int = 0,
    *,
    label: int | None = None,
    grid: str | None = None,
    data_dir: str | os.PathLike | None = None,
) -> DigitPick:
    """Choose digits of a dataset's split to look at, as `digitlab show` does.

    Args:
        name: a registered dataset, `"mnist"` (default) or `"fashion-mnist"`.
        split: `"train"` (default) or `"test"`.
        index: the first digit, counted in the selection (0-based); default 0.
        label: keep only the digits of this class; default None, every digit.
        grid: `"ROWSxCOLS"` for a grid starting at `index` (fewer digits where the selection
            ends); default None, the single digit at `index`.
        data_dir: as for `load_dataset`.

    Returns:
        A `DigitPick` of the chosen digits with the picture's title and default file name.

    Raises:
        DataError: if the dataset cannot be loaded, the split, label or grid is not one there
            is, or `index` is outside the selection.

    Example:
        >>> pick = pick_digits("mnist", "test", 0, label=7, grid="2x3")
        >>> pick.images.shape, pick.title  # ((6, 28, 28), 'mnist test, label 7')
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    names = class_names(name)
    (x_train, y_train), (x_test, y_test) = load_dataset(name, data_dir=data_dir)
    x, y = (x_train, y_train) if split == "train" else (x_test, y_test)
    picked = np.arange(len(y))
    if label is not None:
        if not 0 <= label < len(names):
            raise DataError(f"--label must be 0–{len(names) - 1}, got {label}")
        picked = np.flatnonzero(y == label)
    if not 0 <= index < len(picked):
        raise DataError(f"index {index} is out of range: the selection has {len(picked)} digits")
    shape = None if grid is None else parse_grid(grid)
    chosen = picked[index : index + (1 if shape is None else shape[0] * shape[1])]
    return DigitPick(name, split, chosen, x[chosen], y[chosen], names, shape, label)
