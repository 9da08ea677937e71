"""Figures of digits, training curves and confusion matrices, written as PNG files.

Every figure is a `matplotlib.figure.Figure` built directly, never through `pyplot`, so no
global figure state is kept or leaked and no GUI backend is ever chosen: PNGs render with Agg.
Each `save_*` function builds its figure with a private `_*_figure` helper (which tests inspect)
and writes it atomically. Callers pass numpy arrays; nothing here loads data or imports Keras.
"""

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from digitlab.data import PIXEL_MAX
from digitlab.files import atomic_path

# Darkest to brightest; each pixel is drawn as two characters so the digit keeps its aspect ratio
# in a terminal, where a character cell is about twice as tall as it is wide.
TERMINAL_RAMP = " ░▒▓█"

DIGIT_SIDE = 28  # an MNIST digit is 28×28 pixels
DPI = 100  # every PNG digitlab draws: a figure W inches wide is 100·W pixels wide


def save_digit(image: np.ndarray, path: str | os.PathLike, *, title: str) -> Path:
    """Write one digit as a grayscale PNG, white on black like MNIST, with a title above it.

    Args:
        image: a 28x28 uint8 image, 0 for background and 255 for full ink.
        path: where to write the PNG.
        title: the text above the digit, usually its label.

    Returns:
        The path written.
    """
    fig = Figure(figsize=(3, 3.2), layout="constrained")
    _draw_digit(fig.add_subplot(), image, title, fontsize=14)
    return save_figure(fig, path)


def save_digit_grid(
    images: np.ndarray,
    labels: Sequence[str],
    path: str | os.PathLike,
    *,
    rows: int,
    cols: int,
    title: str | None = None,
) -> Path:
    """Write a grid of digits, each with its label above it.

    Args:
        images: Nx28x28 uint8 images, N at most `rows * cols`; cells past N stay blank.
        labels: N strings, one per image.
        path: where to write the PNG.
        rows: rows in the grid.
        cols: columns in the grid.
        title: a heading for the whole figure; default None, no heading.

    Returns:
        The path written.
    """
    return save_figure(_grid_figure(images, labels, rows=rows, cols=cols, title=title), path)


def save_confusion_matrix(
    cm: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "Confusion matrix",
) -> Path:
    """Write a confusion matrix as a heatmap with the count in each cell.

    Args:
        cm: KxK counts; row i, column j counts the samples of class i predicted as class j.
        class_names: K names, used as tick labels on both axes.
        path: where to write the PNG.
        title: the heading; default "Confusion matrix".

    Returns:
        The path written.
    """
    return save_figure(_confusion_figure(cm, class_names, title=title), path)


def save_confusion_matrix_normalized(
    cm: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    title: str = "Errors per true class (% of the row)",
) -> Path:
    """Write a row-normalised confusion matrix in which the mistakes are what stands out.

    Each row is divided by its total, so a cell is the share (%) of that true class predicted
    as the column's class. The colour scale spans the off-diagonal cells only, so a 0.5%
    confusion is visible next to 98% correct; the diagonal is drawn grey, with its value.

    Args:
        cm: KxK counts, as for `save_confusion_matrix`.
        class_names: K names, used as tick labels on both axes.
        path: where to write the PNG.
        title: the heading.

    Returns:
        The path written.
    """
    return save_figure(_normalized_confusion_figure(cm, class_names, title=title), path)


def row_normalized(cm: np.ndarray) -> np.ndarray:
    """Each row of a confusion matrix divided by its total (a row of zeros stays zero)."""
    cm = np.asarray(cm, dtype=np.float64)
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)


def save_misclassified(
    images: np.ndarray,
    true_labels: np.ndarray,
    predicted: np.ndarray,
    class_names: Sequence[str],
    path: str | os.PathLike,
    *,
    probabilities: np.ndarray | None = None,
    max_images: int = 36,
) -> Path:
    """Write a gallery of misclassified digits, each titled with its true and predicted class.

    Args:
        images: Nx28x28 uint8 images that the model got wrong, N possibly 0.
        true_labels: N class indices, the right answers.
        predicted: N class indices, the model's answers.
        class_names: names indexed by class.
        path: where to write the PNG.
        probabilities: default None, titles without a confidence. Either N confidences in the
            predicted class, or NxK class probabilities from which the predicted class's is taken.
        max_images: the most digits shown, the first ones in order; default 36.

    Returns:
        The path written.
    """
    fig = _misclassified_figure(
        images, true_labels, predicted, class_names, probabilities, max_images
    )
    return save_figure(fig, path)


def save_training_curves(history: dict[str, list[float]], path: str | os.PathLike) -> Path:
    """Write one panel per metric (loss first, then accuracy, then the rest), train and validation.

    Args:
        history: Keras's `History.history`: a list of per-epoch values for each metric, with
            `val_`-prefixed keys for validation; those may be missing.
        path: where to write the PNG.

    Returns:
        The path written.
    """
    return save_figure(_curves_figure(history), path)


def terminal_digit(image: np.ndarray) -> str:
    """Draw a digit with block characters, two per pixel, darker to brighter `TERMINAL_RAMP`.

    Args:
        image: a 28x28 uint8 image; 0 becomes spaces and 255 becomes full blocks.

    Returns:
        28 lines of 56 characters joined by newlines, with no trailing newline.
    """
    ramp = np.array([c * 2 for c in TERMINAL_RAMP])
    levels = image.astype(np.int64) * len(TERMINAL_RAMP) // 256
    return "\n".join("".join(row) for row in ramp[levels])


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write `fig` as a PNG at `DPI`, to a temporary name beside `path`, then rename it into place.

    The one way a figure is saved (plots, insight, compare, tune report, experiments), so
    every PNG has the same resolution and a kill never leaves half a picture behind.

    Args:
        fig: the figure, drawn with Agg (a `matplotlib.figure.Figure`, or a pyplot one).
        path: where to write the PNG.

    Returns:
        The path written.
    """
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return Path(path)


_save = save_figure  # the name experiments/plots.py imports, until it calls save_figure


def label_heatmap(ax: Axes, xlabel: str, ylabel: str = "", *, fontsize: float = 8) -> None:
    """Name a picture-like heatmap's axes (a digit, a weight map, a strip of units) without
    its pixel ticks: the ticks go, the axis labels stay (`set_axis_off` would hide both)."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(xlabel, fontsize=fontsize)
    ax.set_ylabel(ylabel, fontsize=fontsize)


def _draw_digit(ax: Axes, image: np.ndarray, title: str, *, fontsize: float) -> None:
    # Fixed limits so a faint digit looks faint rather than stretched to full contrast.
    ax.imshow(image, cmap="gray", vmin=0, vmax=PIXEL_MAX, interpolation="nearest")
    ax.set_title(title, fontsize=fontsize)
    ax.set_axis_off()


def _grid_figure(
    images: np.ndarray,
    titles: Sequence[str],
    *,
    rows: int,
    cols: int,
    title: str | None = None,
    cell_size: tuple[float, float] = (1.2, 1.4),
    fontsize: float = 10,
) -> Figure:
    """Digits in a `rows`×`cols` grid, each with its title above it, drawn as one mosaic image
    in one Axes (36 Axes, one per digit, took 4× as long to draw: 1.1 s against 0.3 s)."""
    cell_w, cell_h = cell_size  # inches
    heading = 0.4 if title is not None else 0.0
    fig = Figure(figsize=(cols * cell_w, rows * cell_h + heading))
    band = fontsize / 72 * 1.5  # the line of title text above each digit, inches
    side = DIGIT_SIDE / (0.9 * min(cell_w, cell_h - band))  # mosaic pixels per inch
    width, height = cell_w * side, cell_h * side  # a cell, in mosaic pixels
    ax = fig.add_axes((0, 0, 1, rows * cell_h / (rows * cell_h + heading)))
    ax.set_axis_off()
    mosaic = np.full((math.ceil(rows * height), math.ceil(cols * width)), np.nan)  # NaN: blank
    for i, (image, label) in enumerate(zip(images, titles, strict=False)):
        row, col = divmod(i, cols)
        h, w = image.shape
        x = round(col * width + (width - w) / 2)
        y = round((row + 1) * height - (height - band * side - h) / 2 - h)
        mosaic[y : y + h, x : x + w] = image
        ax.text(x + w / 2, y - 0.1 * side, label, ha="center", va="bottom", fontsize=fontsize)
    # Fixed limits so a faint digit looks faint rather than stretched to full contrast.
    ax.imshow(
        mosaic,
        cmap="gray",
        vmin=0,
        vmax=PIXEL_MAX,
        interpolation="nearest",
        aspect="auto",
        extent=(0, mosaic.shape[1], mosaic.shape[0], 0),
    )
    if title is not None:
        fig.suptitle(title, y=1 - 0.08 / (rows * cell_h + heading), va="top")
    return fig


def _label_confusion_axes(ax, class_names: Sequence[str], title: str) -> None:
    """Title, axis names and one tick per class, long names slanted to stay readable."""
    k = len(class_names)
    ax.set_title(title)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_xticks(range(k), labels=class_names)
    ax.set_yticks(range(k), labels=class_names)
    if max(len(name) for name in class_names) > 2:
        ax.tick_params(axis="x", labelrotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")


def _confusion_figure(cm: np.ndarray, class_names: Sequence[str], *, title: str) -> Figure:
    k = len(class_names)
    side = max(4.0, 0.55 * k + 2.5)
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(cm, cmap="Blues", interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8)
    _label_confusion_axes(ax, class_names, title)
    # Dark text on light cells and light text on dark ones, whatever the colormap.
    cell_colours = im.cmap(im.norm(cm))
    luminance = cell_colours[..., :3] @ np.array([0.299, 0.587, 0.114])
    fontsize = 10 if k <= 10 else 7
    for (i, j), count in np.ndenumerate(cm):
        colour = "white" if luminance[i, j] < 0.5 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize=fontsize)
    return fig


def _normalized_confusion_figure(
    cm: np.ndarray, class_names: Sequence[str], *, title: str
) -> Figure:
    k = len(class_names)
    share = row_normalized(cm) * 100
    errors = np.ma.masked_array(share, mask=np.eye(k, dtype=bool))
    side = max(4.0, 0.55 * k + 2.5)
    fig = Figure(figsize=(side + 1, side), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(np.eye(k), cmap="Greys", vmin=0, vmax=4, interpolation="nearest")  # the diagonal
    # At least 1% at the top of the scale, so a nearly perfect model isn't drawn all red.
    vmax = max(1.0, float(errors.max()) if errors.count() else 1.0)
    im = ax.imshow(errors, cmap="Reds", vmin=0, vmax=vmax, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="% of the true class (off-diagonal)")
    _label_confusion_axes(ax, class_names, title)
    fontsize = 8 if k <= 10 else 6
    for (i, j), value in np.ndenumerate(share):
        if i != j and value == 0:
            continue  # blank, so the errors that exist stand out
        colour = "white" if i != j and value > vmax / 2 else "black"
        text = f"{value:.0f}" if i == j else f"{value:.1f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=colour)
    return fig


def _misclassified_figure(
    images: np.ndarray,
    true_labels: np.ndarray,
    predicted: np.ndarray,
    class_names: Sequence[str],
    probabilities: np.ndarray | None,
    max_images: int,
) -> Figure:
    total = len(images)
    if total == 0:
        return _message_figure("no misclassified digits")
    shown = min(total, max_images)
    titles = []
    for i in range(shown):
        text = f"true {class_names[true_labels[i]]} → pred {class_names[predicted[i]]}"
        if probabilities is not None:
            confidence = (
                probabilities[i, predicted[i]] if probabilities.ndim == 2 else probabilities[i]
            )
            text += f" ({confidence:.2f})"
        titles.append(text)
    cols = min(shown, 6)
    # Wide enough for the longest title at 8 pt, so that neighbours don't overlap.
    width = max(1.6, 0.06 * max(len(text) for text in titles) + 0.2)
    return _grid_figure(
        images[:shown],
        titles,
        rows=math.ceil(shown / cols),
        cols=cols,
        title=f"{shown} of {total} misclassified",
        cell_size=(width, 1.9),
        fontsize=8,
    )


# The largest float32: no loss or metric Keras records is larger, and a larger one (a
# crafted 1e308) makes Matplotlib's tick locator overflow ("arange: cannot compute length").
_LARGEST_METRIC = 3.4028234663852886e38


def curve_values(values: Sequence[float]) -> list[float]:
    """A history's values as a curve draws them: inf, NaN and values beyond float32 (which
    training can't record) become gaps, so a damaged history.csv is drawn, not a crash."""
    return [v if math.isfinite(v) and abs(v) <= _LARGEST_METRIC else math.nan for v in values]


def _curves_figure(history: dict[str, list[float]]) -> Figure:
    metrics = list(dict.fromkeys(key.removeprefix("val_") for key in history))
    metrics.sort(key=lambda name: {"loss": 0, "accuracy": 1}.get(name, 2))  # stable: rest in order
    if not metrics:
        return _message_figure("no training history")
    cols = min(len(metrics), 3)
    rows = math.ceil(len(metrics) / cols)
    fig = Figure(figsize=(4.5 * cols, 3.5 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(metrics) :]:
        ax.set_axis_off()
    epochs = max(len(values) for values in history.values())
    for ax, name in zip(axes, metrics, strict=False):
        for key, label in ((name, "train"), (f"val_{name}", "validation")):
            if key in history:
                values = curve_values(history[key])
                # Markers so that a one-epoch run, a single point, still shows up.
                ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        # Half an epoch either side, so a one-epoch run gets the tick "1", not 0.95 … 1.05.
        ax.set_xlim(0.5, epochs + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def _message_figure(text: str) -> Figure:
    fig = Figure(figsize=(4, 1.5))
    fig.text(0.5, 0.5, text, ha="center", va="center", fontsize=14)
    return fig
