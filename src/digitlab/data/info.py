"""What a dataset holds: shapes, class counts, pixel statistics, source and cache."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from digitlab.data.registry import DEFAULT_DATASET, PIXEL_MAX, cache_dir, class_names
from digitlab.data.sources import load_dataset_files

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True)
class SplitInfo:
    """One split of a dataset: the shapes of its arrays and its images per class."""

    images: tuple[int, ...]  # e.g. (60000, 28, 28)
    labels: tuple[int, ...]  # e.g. (60000,)
    class_counts: dict[str, int]  # class name -> images of that class, in label order

    def to_dict(self) -> dict[str, Any]:
        """The split as JSON-ready data: `{"images": [...], "labels": [...], "class_counts"}`."""
        return {
            "images": list(self.images),
            "labels": list(self.labels),
            "class_counts": dict(self.class_counts),
        }


@dataclass(frozen=True)
class DatasetInfo:
    """What `dataset_info` measures; `to_dict()` is `data info --json`, `print` its table."""

    name: str
    class_names: tuple[str, ...]
    splits: dict[str, SplitInfo]  # "train" and "test"
    pixel_mean: float  # of the train images scaled to [0, 1]
    pixel_std: float
    source: str  # as `DatasetFiles.source`
    cache_dir: str
    sha256: dict[str, str]  # raw IDX file name -> SHA-256, as verified

    def to_dict(self) -> dict[str, Any]:
        """The description as JSON-ready data, keys in the order `data info --json` shows."""
        return {
            "name": self.name,
            "class_names": list(self.class_names),
            "splits": {split: figures.to_dict() for split, figures in self.splits.items()},
            "pixel_mean": self.pixel_mean,
            "pixel_std": self.pixel_std,
            "source": self.source,
            "cache_dir": self.cache_dir,
            "sha256": dict(self.sha256),
        }

    def print(self, console: Console) -> None:
        """Print the description as `digitlab data info` does: shapes, statistics, a table."""
        from rich.table import Table

        console.print(f"[bold]{self.name}[/bold]  source: {self.source}")
        console.print(f"cache: {self.cache_dir}")
        for split, figures in self.splits.items():
            console.print(
                f"{split}: images {'×'.join(map(str, figures.images))}, "
                f"labels {'×'.join(map(str, figures.labels))}"
            )
        console.print(
            f"pixel mean {self.pixel_mean:.4f}, std {self.pixel_std:.4f} "
            "(train images scaled to 0–1)"
        )
        table = Table("class", *self.splits, title="images per class")
        for name in self.class_names:
            counts = (str(figures.class_counts[name]) for figures in self.splits.values())
            table.add_row(name, *counts)
        console.print(table)


def dataset_info(
    name: str = DEFAULT_DATASET, data_dir: str | os.PathLike | None = None
) -> DatasetInfo:
    """Describe a dataset: shapes, class counts, pixel statistics, source.

    Args:
        name: a registered dataset, `"mnist"` (default) or `"fashion-mnist"`.
        data_dir: as for `load_dataset`.

    Returns:
        A `DatasetInfo` (`.to_dict()` for JSON); `pixel_mean`/`pixel_std` are of the train
        images scaled to [0, 1] (MNIST: 0.1307 and 0.3081, the constants of the classic
        normalisation).

    Raises:
        DataError: as for `load_dataset`.
    """
    files, ((x_train, y_train), (x_test, y_test)) = load_dataset_files(name, data_dir)
    names = class_names(name)
    # Exact integer sums, without a 60000x28x28 float copy: std = sqrt(E[x^2] - E[x]^2).
    pixels = x_train.ravel()
    n = pixels.size
    mean = float(pixels.sum(dtype=np.uint64)) / n / PIXEL_MAX
    mean_sq = float(np.einsum("i,i->", pixels, pixels, dtype=np.uint64)) / n / PIXEL_MAX**2
    std = float(np.sqrt(mean_sq - mean**2))
    splits = {}
    for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        per_class = np.bincount(y, minlength=len(names))
        splits[split] = SplitInfo(
            images=tuple(x.shape),
            labels=tuple(y.shape),
            class_counts={c: int(k) for c, k in zip(names, per_class, strict=True)},
        )
    return DatasetInfo(
        name=name,
        class_names=tuple(names),
        splits=splits,
        pixel_mean=mean,
        pixel_std=std,
        source=files.source,
        cache_dir=str(cache_dir() / name),
        sha256=dict(files.sha256),
    )
