"""Predict digits with a trained run: one image or many take the same path.

The notebook's `model.predict(x_test[0])` fails because Keras wants a batch; here a single
28×28 image, a batch, a .npy file, test-set indices and image files are all accepted and
turned into one uint8 batch before the run's own preprocessing is applied.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.data import IMAGE_SHAPE, PIXEL_MAX
from digitlab.errors import DataError, DigitlabError, ImageError
from digitlab.files import is_file, not_a_file, read_capped
from digitlab.runs import Run, load_run

MNIST_SHAPE = IMAGE_SHAPE  # the default frame: MNIST's (28, 28)
MAX_NPY_BYTES = 1 << 30  # a .npy batch to predict: 1 GB is over a million 28×28 float64 images


@dataclass(frozen=True)
class Refused:
    """An input that could not be predicted: its name, its place among all the inputs
    (0-based) and its error, the one line it gives when it is predicted alone."""

    input: str
    position: int
    error: DigitlabError

    @property
    def message(self) -> str:
        """The one line it gives alone: `blank.png: no digit found: …`."""
        return str(self.error)

    @property
    def reason(self) -> str:
        """Why, for a row that already names the input: `no digit found: …`."""
        return self.message.removeprefix(f"{self.input}: ")


@dataclass
class Prediction:
    """Predicted classes and the probabilities behind them, one row per predicted input.

    `verdicts` holds each row's `confidence`, `confident`, `reason` and `prediction_set`
    (`digitlab.confidence.verdicts`: None for `confident`/`reason` when the run has no
    calibrated thresholds; `prediction_set` lists the classes that hold the true one with
    95% probability, most probable first, `digitlab.conformal`). `refused` holds the inputs
    that could not be read (a blank or broken image among good ones): they have no row in
    `probabilities`, and `to_list` and `table` show each in its place with its reason.
    """

    probabilities: np.ndarray
    class_names: list[str]
    sources: list[str] = field(default_factory=list)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)

    @property
    def digits(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    def __repr__(self) -> str:
        """One line: how many inputs, and the predicted labels (the first 10) with the
        probability of a single one; then how many were refused, if any."""
        labels = [self.class_names[d] for d in self.digits]
        refused = f"; {len(self.refused)} refused" if self.refused else ""
        if len(labels) == 1:
            best = float(self.probabilities[0].max())
            return f"<Prediction: 1 image, {labels[0]} ({best:.2%}){refused}>"
        shown = " ".join(labels[:10]) + (" …" if len(labels) > 10 else "")
        return f"<Prediction: {len(labels)} images, {shown}{refused}>"

    def _repr_html_(self) -> str:
        """Jupyter's inline view: a row per input (the first 50) with its label and
        probability, or why it was refused."""
        from digitlab import display

        rows = [
            (
                row["input"],
                f"refused: {row['error']}"
                if "error" in row
                else f"{row['label']} ({display.percent(row['probability'])})",
            )
            for row in self.to_list()[:50]
        ]
        count = len(self.probabilities) + len(self.refused)
        if count > len(rows):
            rows.append(("…", f"{count - len(rows)} more"))
        subtitle = f"{count} image{'s' if count != 1 else ''}"
        return display.card("Prediction", rows, subtitle=subtitle)

    def to_list(self, truths: Sequence[str | None] | None = None) -> list[dict[str, Any]]:
        """A dict per input, in the order given: a predicted one's `input`, `digit`, `label`,
        `probability`, `probabilities` and verdict (and `true_label`, from `truths`: one per
        predicted input, None where unknown); a refused one's `input` and `error` only."""
        rows = []
        for i, probs in enumerate(self.probabilities):
            best = int(probs.argmax())
            rows.append(
                {
                    "input": self.sources[i] if i < len(self.sources) else str(i),
                    "digit": best,
                    "label": self.class_names[best],
                    "probability": float(probs[best]),
                    "probabilities": [round(float(p), 6) for p in probs],
                    **(self.verdicts[i] if i < len(self.verdicts) else _no_verdict(probs)),
                }
            )
        if truths is not None:
            for row, truth in zip(rows, truths, strict=True):
                row["true_label"] = truth
        for refused in sorted(self.refused, key=lambda r: r.position):
            rows.insert(refused.position, {"input": refused.input, "error": refused.message})
        return rows

    def table(self, truths: Sequence[str | None] | None = None):
        """The table `digitlab predict` prints: a row per input with its label, probability,
        confidence verdict, prediction set ("4 or 9"), true label (`truths`, one per
        predicted input, "–" where unknown) and all probabilities; a refused input's row
        gives its reason instead."""
        from rich.table import Table
        from rich.text import Text

        from digitlab.conformal import in_words

        classes = " ".join(self.class_names)
        columns = ("input", "prediction", "probability", "verdict", "95% set", "true")
        table = Table(*columns, f"probabilities ({classes})")
        reasons = {refused.input: refused.reason for refused in self.refused}
        for row in self.to_list(truths):
            if "error" in row:
                table.add_row(row["input"], Text(reasons[row["input"]], style="red"), *["–"] * 5)
                continue
            verdict = "confident" if row["confident"] else row["reason"]
            if row["confident"] is None:
                verdict = "–"  # no thresholds in the run
            chosen = row["prediction_set"]
            table.add_row(
                row["input"],
                row["label"],
                f"{row['probability']:.3f}",
                verdict,
                "–" if chosen is None else in_words(chosen, self.class_names),
                row.get("true_label") or "–",
                " ".join(f"{p:.2f}" for p in row["probabilities"]),
            )
        return table


def _no_verdict(probabilities: np.ndarray) -> dict[str, Any]:
    """The verdict of a row predicted without one: its top probability, nothing more."""
    return {
        "confidence": float(probabilities.max()),
        "confident": None,
        "reason": None,
        "prediction_set": None,
    }


def as_batch(images: np.ndarray, shape: tuple[int, int] = MNIST_SHAPE) -> np.ndarray:
    """Turn one image or many (28×28, 784, N×28×28, N×784) into a uint8 N×28×28 batch.

    `shape` is the height and width the run reads (`run.image_shape`; MNIST's 28×28 by
    default). Pixel values follow `to_pixels`: integers are 0–255; floats all within 0–1 are
    the notebook's `x / 255` and are scaled by 255; other floats are 0–255.

    Raises:
        DataError: the shape holds no whole number of images, or values are out of range.
    """
    x = np.asarray(images)
    given = "×".join(map(str, x.shape))
    height, width = shape
    if x.shape in {(height, width), (height * width,)}:
        x = x[np.newaxis]
    if x.ndim == 2 and x.shape[1] == height * width:
        x = x.reshape(-1, height, width)
    if x.ndim != 3 or x.shape[1:] != (height, width) or len(x) == 0:
        raise DataError(
            f"images must be shaped N×{height}×{width} or N×{height * width}, got {given}"
        )
    return to_pixels(x)


def to_pixels(values: np.ndarray) -> np.ndarray:
    """The one rule for reading numbers as pixels, in the library, the CLI and the HTTP API.

    - integer arrays are 0–255;
    - float arrays whose values all lie within 0–1 are the notebook's `x / 255`, and are
      scaled by 255 (0.8 → 204);
    - other float arrays are 0–255 (`x_test.astype("float32")`);
    - anything else (booleans, strings, NaN, ±infinity, values out of range) is refused.

    Values are rounded to the nearest integer. The shape is kept.

    Raises:
        DataError: not numbers, or values outside the ranges above.
    """
    x = np.asarray(values)
    if x.dtype.kind not in "iuf":
        raise DataError(f"pixels must be numbers, got {x.dtype} values")
    if x.size == 0:
        return x.astype(np.uint8)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = "NaN" if np.isnan(x).any() else "infinity"
        raise DataError(f"pixel values must be between 0 and 255 (or 0–1 floats), got {bad}")
    low, high = float(x.min()), float(x.max())
    if x.dtype.kind == "f" and low >= 0 and high <= 1:
        return np.rint(x * PIXEL_MAX).astype(np.uint8)
    if low < 0 or high > PIXEL_MAX:
        raise DataError(
            f"pixel values must be between 0 and 255 (or 0–1 floats), got {low:g}–{high:g}"
        )
    return np.rint(x).astype(np.uint8) if x.dtype.kind == "f" else x.astype(np.uint8)


def load_npy(path: str | Path, shape: tuple[int, int] = MNIST_SHAPE) -> np.ndarray:
    """Read an N×28×28 or N×784 array (for `shape` 28×28) from a .npy file, as uint8.

    The file must be a regular file of at most 1 GB (a FIFO or a device is refused), and
    holds plain numbers: pickled objects are never loaded.

    Raises:
        DataError: not a readable .npy array of images.
    """
    path = Path(path)
    data = read_capped(path, MAX_NPY_BYTES, DataError)
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path} is not a readable .npy array: {exc}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise DataError(f"{path} is an .npz archive; save one array with numpy.save")
    try:
        return as_batch(array, shape)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def load_image_files(
    paths: list[str | Path], raw: bool = False, shape: tuple[int, int] = MNIST_SHAPE
) -> np.ndarray:
    """Read image files as a uint8 N×28×28 batch, each as `read_image_file` reads it.

    Raises:
        ImageError: a file is missing, not an image, too large, or holds no digit.
    """
    return np.stack([read_image_file(path, raw=raw, shape=shape) for path in paths])


def read_image_file(
    path: str | Path, raw: bool = False, shape: tuple[int, int] = MNIST_SHAPE
) -> np.ndarray:
    """Read one image file as a uint8 28×28 (for `shape` 28×28).

    By default the image goes through the MNIST-style preprocessing (grayscale, ink
    detection, crop, 20 px box, centre of mass). With `raw=True` the image is taken as
    already MNIST-like (white digit on black) and only resized to `shape` (height, width).

    Raises:
        ImageError: the file is missing, not an image, too large, or holds no digit; the
            message names it.
    """
    from PIL import Image

    from digitlab.preprocess import load_image, preprocess

    path = Path(path)
    if not is_file(path):  # a FIFO, a folder, a link to /dev/zero: say which
        raise ImageError(f"{not_a_file(path)}; pass the path of a PNG or JPEG image")
    try:
        image = load_image(path)
        if raw:
            size = (shape[1], shape[0])  # Pillow's (width, height)
            return np.asarray(image.convert("L").resize(size, Image.Resampling.LANCZOS), np.uint8)
        return preprocess(image, frame=shape)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from None


@dataclass
class Inputs:
    """What to predict, gathered from several places: a uint8 N×H×W batch of the readable
    inputs, each one's name (`test[3]`, `batch.npy[0]`, a file's path) and its true label
    where known; and the inputs that could not be read (`refused`), each with its place
    among all the inputs and its error."""

    images: np.ndarray
    sources: list[str]
    truths: list[str | None]
    refused: list[Refused] = field(default_factory=list)


def parse_indices(values: Sequence[str | int]) -> list[int]:
    """Test-split indices written as `digitlab predict --index` takes them: `0`, `0,1,2`,
    `0-9` (inclusive), each value one of these or a comma-separated mix.

    Raises:
        DigitlabError: a value is not numbers like these.
    """
    indices = []
    for value in values:
        for part in str(value).replace(" ", "").split(","):
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


def gather_inputs(
    run: Run,
    images: Sequence[str | Path] | None = None,
    indices: Sequence[str | int] | None = None,
    npy: str | Path | None = None,
    raw: bool = False,
    data_dir: str | Path | None = None,
) -> Inputs:
    """Everything `digitlab predict` is asked about, as one batch in the run's image shape:
    digits of the run's test split (`indices`, as `parse_indices` reads them, with their
    true labels), then a .npy array's images, then image files (`raw`: see
    `read_image_file`).

    One bad input doesn't sink the others: a .npy file or an image that can't be read is
    kept in `Inputs.refused` with its error, and the rest are gathered. Alone (nothing else
    to predict), its error is raised, as it would be for `--npy` or one image by itself.

    Raises:
        DigitlabError: nothing to predict, an index out of the test split or badly written
            (a mistake in the command, refused before anything is read), or the one input
            given is unreadable.
    """
    inputs = _test_digits(run, indices, data_dir)
    batches = [inputs.images]
    readers = []  # (the input's name, how to read it, whether it holds many images)
    if npy is not None:
        readers.append((str(npy), partial(load_npy, npy, run.image_shape), True))
    for path in images or ():
        readers.append((str(path), partial(load_image_files, [path], raw, run.image_shape), False))
    for source, read, many in readers:
        try:
            batch = read()
        except DigitlabError as exc:
            place = len(inputs.sources) + len(inputs.refused)
            inputs.refused.append(Refused(source, place, exc))
            continue
        batches.append(batch)
        names = [f"{Path(source).name}[{i}]" for i in range(len(batch))] if many else [source]
        inputs.sources += names
        inputs.truths += [None] * len(batch)
    if not inputs.sources and not inputs.refused:
        raise DigitlabError("nothing to predict: give image files, --index N or --npy FILE")
    if not inputs.sources and len(inputs.refused) == 1:
        raise inputs.refused[0].error
    inputs.images = np.concatenate(batches)
    return inputs


def _test_digits(run: Run, indices: Sequence[str | int] | None, data_dir) -> Inputs:
    """The test split's digits at `indices` (none: an empty batch), named and labelled.

    Raises:
        DigitlabError: an index badly written or outside the test split.
    """
    if not indices:
        return Inputs(np.empty((0, *run.image_shape), np.uint8), [], [])
    from digitlab.data import load_dataset

    wanted = parse_indices(indices)
    _, (x_test, y_test) = load_dataset(run.dataset.name, data_dir=data_dir)
    bad = [i for i in wanted if not 0 <= i < len(x_test)]
    if bad:
        raise DigitlabError(f"--index {bad[0]} is out of range: the test split has {len(x_test)}")
    return Inputs(
        x_test[wanted],
        [f"test[{i}]" for i in wanted],
        [run.class_names[y_test[i]] for i in wanted],
    )


def predict(
    run: Run | str | Path, images: np.ndarray, sources: list[str] | None = None
) -> Prediction:
    """Predict the class of each image with a trained run.

    Args:
        run: a `Run`, or a run path/name/"latest".
        images: one image or a batch, as `as_batch` accepts (28×28, 784, N×28×28, N×784).
        sources: optional names for the inputs, echoed in `Prediction.to_list()`.

    Returns:
        A `Prediction`: `.digits` and `.probabilities` (N×10, rows sum to 1), and each row's
        verdict (`confidence`, `confident`, `reason`, `prediction_set`; see
        `digitlab.confidence`).

    Example:
        >>> import digitlab
        >>> (_, _), (x_test, y_test) = digitlab.load_dataset("mnist")
        >>> digitlab.predict("latest", x_test[0]).digits  # one 28×28 image: array([7])
        >>> digitlab.predict("latest", x_test[:100]).probabilities.argmax(axis=1)
    """
    from digitlab.confidence import verdicts

    run = run if isinstance(run, Run) else load_run(run)
    batch = as_batch(images, run.image_shape)
    probabilities = run.predict_proba(batch)
    return Prediction(
        probabilities, run.class_names, list(sources or []), verdicts(run, batch, probabilities)
    )


def predict_inputs(run: Run, inputs: Inputs) -> Prediction:
    """`predict` for what `gather_inputs` gathered: the readable inputs in one batch, and
    the refused ones kept in `Prediction.refused`, each in its place with its reason."""
    if len(inputs.images):
        prediction = predict(run, inputs.images, inputs.sources)
    else:  # every input refused: nothing for the model
        prediction = Prediction(np.empty((0, len(run.class_names))), run.class_names)
    return replace(prediction, refused=list(inputs.refused))
