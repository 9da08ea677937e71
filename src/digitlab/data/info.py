"""What a dataset holds: shapes, class counts, pixel statistics, source and cache."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from digitlab.data.registry import DEFAULT_DATASET, PIXEL_MAX, cache_dir, class_names
from digitlab.data.sources import load_dataset_files


def dataset_info(
    name: str = DEFAULT_DATASET, data_dir: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Describe a dataset as plain data: shapes, class counts, pixel statistics, source.

    Args:
        name: a registered dataset, `"mnist"` (default) or `"fashion-mnist"`.
        data_dir: as for `load_dataset`.

    Returns:
        A JSON-ready dict; `pixel_mean`/`pixel_std` are of the train images scaled to [0, 1]
        (MNIST: 0.1307 and 0.3081, the constants of the classic normalisation).

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
        splits[split] = {
            "images": list(x.shape),
            "labels": list(y.shape),
            "class_counts": {c: int(k) for c, k in zip(names, per_class, strict=True)},
        }
    return {
        "name": name,
        "class_names": list(names),
        "splits": splits,
        "pixel_mean": mean,
        "pixel_std": std,
        "source": files.source,
        "cache_dir": str(cache_dir() / name),
        "sha256": dict(files.sha256),
    }
