"""What a run's network learned (`inspect`): the first layer's weights, the activation
statistics of every hidden layer, and per class the average digit and its linear template;
each drawn to a PNG, the statistics written to the run's inspect summary.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from digitlab.data import PIXEL_MAX
from digitlab.errors import DigitlabError
from digitlab.insight.probe import LayerInfo, Probe
from digitlab.plots import label_heatmap, save_figure
from digitlab.runs import INSPECT_DIR, Run, write_inspect_summary

WEIGHTS_PNG = "weights.png"
ACTIVATIONS_PNG = "activations.png"
CLASS_INPUTS_PNG = "class_inputs.png"
SATURATION_MARGIN = 0.01
BOUNDS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "hard_sigmoid": (0.0, 1.0)}
RELU_LIKE = ("relu", "relu6")
MAX_TILES = 256  # first-layer units drawn in weights.png
HISTOGRAM_BINS = 30


def first_layer_weights(model) -> tuple[np.ndarray, str]:
    """The first weighted layer's kernel as tiles: (units × 28 × 28 for a Dense layer on the
    flat image; filters × kh × kw for a conv layer, its first input channel) and the layer's
    name. A Dense layer whose inputs aren't a square image gives units × 1 × inputs.

    Raises:
        DigitlabError: the network has no Dense or Conv2D layer.
    """
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "Dense":
            kernel = np.asarray(layer.kernel.value)
            inputs, units = kernel.shape
            side = math.isqrt(inputs)
            if side * side == inputs:
                return kernel.T.reshape(units, side, side), layer.name
            return kernel.T.reshape(units, 1, inputs), layer.name
        if kind == "Conv2D":
            kernel = np.asarray(layer.kernel.value)
            return np.moveaxis(kernel[:, :, 0, :], -1, 0), layer.name
    raise DigitlabError("the network has no Dense or Conv2D layer whose weights to draw")


def _tile_grid(tiles: np.ndarray) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(len(tiles)))
    return math.ceil(len(tiles) / cols), cols


def save_weights(
    tiles: np.ndarray, path: str | os.PathLike, *, title: str, mask: np.ndarray | None = None
) -> Path:
    """The tiles in one grid, on one diverging scale centred at 0 (red +, blue −).

    `mask`: a tile-shaped boolean array of the pixels to draw (e.g. those some digit inks);
    the others are left blank, and the colour scale spans the drawn ones."""
    if mask is not None and mask.shape == tiles.shape[1:] and mask.any():
        tiles = np.where(mask, tiles, np.nan)
    return save_figure(_weights_figure(tiles, title), path)


def _mosaic(tiles: np.ndarray, cols: int) -> np.ndarray:
    """Tiles side by side in rows of `cols`, one blank (NaN) pixel between them."""
    rows = math.ceil(len(tiles) / cols)
    h, w = tiles.shape[1:]
    out = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1), np.nan)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, cols)
        out[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = tile
    return out


def _weights_figure(tiles: np.ndarray, title: str) -> Figure:
    shown = tiles[:MAX_TILES]
    _rows, cols = _tile_grid(shown)
    mosaic = _mosaic(shown, cols)
    height, width = mosaic.shape
    scale = 7.5 / max(height, width)
    fig = Figure(figsize=(width * scale + 1.4, height * scale + 0.6), layout="constrained")
    ax = fig.add_subplot()
    limit = float(np.nanmax(np.abs(shown), initial=0)) or 1.0
    image = ax.imshow(mosaic, cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    h, w = shown.shape[1:]
    label_heatmap(
        ax,
        f"each tile: one unit's weights on the {h}×{w} input pixels",
        f"units, {cols} to a row, the first at the top left",
        fontsize=9,
    )
    if len(tiles) > len(shown):
        title += f" (first {len(shown)} of {len(tiles)})"
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.6, label="weight (red +, blue −)")
    return fig


def _stats_of(info: LayerInfo, values: np.ndarray) -> dict[str, Any]:
    units = values.reshape(len(values), -1, values.shape[-1])  # N × positions × units
    per_unit = units.mean(axis=(0, 1))
    counts, edges = np.histogram(values, bins=HISTOGRAM_BINS)
    stats: dict[str, Any] = {
        "name": info.name,
        "type": info.type,
        "activation": info.activation,
        "units": int(units.shape[-1]),
        "mean": float(values.mean()),
        "histogram": {"counts": counts.tolist(), "edges": [float(e) for e in edges]},
        "saturated_fraction": None,
        "dead_fraction": None,
        "mean_per_unit_sorted": [float(v) for v in np.sort(per_unit)[::-1]],
    }
    if info.activation in BOUNDS:
        low, high = BOUNDS[info.activation]
        near = (values <= low + SATURATION_MARGIN) | (values >= high - SATURATION_MARGIN)
        stats["saturated_fraction"] = float(near.mean())
    if info.activation in RELU_LIKE:
        stats["dead_fraction"] = float((units.max(axis=(0, 1)) <= 0).mean())
    return stats


def activation_stats(probe: Probe, values: list[np.ndarray]) -> list[dict[str, Any]]:
    """Per hidden layer (every shown layer but the output): histogram, saturated share of
    sigmoid/tanh activations (digit × unit values within 0.01 of a bound), dead ReLU share
    (units, or conv channels, zero on every digit), mean activation per unit sorted."""
    return [_stats_of(info, v) for info, v in zip(probe.layers[:-1], values[:-1], strict=True)]


def save_activations(stats: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write activations.png: per hidden layer (`activation_stats`), its histogram and its
    units' mean activations, sorted."""
    return save_figure(_activations_figure(stats), path)


def _activations_figure(stats: list[dict[str, Any]]) -> Figure:
    if not stats:
        fig = Figure(figsize=(4, 1.5))
        fig.text(0.5, 0.5, "no hidden layers", ha="center", va="center", fontsize=14)
        return fig
    fig = Figure(figsize=(9, 2.6 * len(stats)), layout="constrained")
    axes = fig.subplots(len(stats), 2, squeeze=False)
    for (left, right), layer in zip(axes, stats, strict=True):
        edges = np.asarray(layer["histogram"]["edges"])
        left.bar(edges[:-1], layer["histogram"]["counts"], width=np.diff(edges), align="edge")
        left.set_yscale("log")
        notes = []
        if layer["saturated_fraction"] is not None:
            notes.append(f"saturated {layer['saturated_fraction']:.1%}")
        if layer["dead_fraction"] is not None:
            notes.append(f"dead {layer['dead_fraction']:.1%}")
        note = f" — {', '.join(notes)}" if notes else ""
        left.set_title(f"{layer['name']} ({layer['activation']}){note}", fontsize=10)
        left.set_xlabel("activation")
        left.set_ylabel("count")
        means = layer["mean_per_unit_sorted"]
        right.plot(range(1, len(means) + 1), means, marker=".", linestyle="none")
        right.set_title("mean activation per unit, sorted", fontsize=10)
        right.set_xlabel("unit (by rank)")
        right.set_ylabel("mean activation")
        right.grid(alpha=0.3)
    return fig


INK_SHARE_MIN = 0.01  # a template pixel inked by fewer of the digits than this is left blank


def ink_share(images: np.ndarray) -> np.ndarray:
    """The share of `images` (N×28×28 uint8) that ink each pixel (value above 0)."""
    return (np.asarray(images) > 0).mean(axis=0)


def class_inputs(
    probe: Probe,
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    *,
    ink: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, str]:
    """Per class: the mean of the correctly classified digits weighted by the class
    probability (K×28×28, 0–255), and the class's template: what that average digit's ink
    adds to the class score (K×28×28, in logit units).

    The template is the average digit's ink (scaled as the network reads it, 0–1) times
    the mean gradient of the class logit with respect to the pixels over the class's
    digits: the weight map of the network linearised around them, weighted by the ink a
    digit of the class puts there. Unweighted, the gradient's largest values lie in border
    pixels almost no digit inks, where a weight costs nothing and says nothing, and it
    looks like noise. A pixel inked by fewer than 1% (`INK_SHARE_MIN`) of the digits (`ink`,
    each pixel's share; default: of `images`, `inspect` passes the training digits') is left
    blank (NaN). Returns (averages, templates, a caption saying so)."""
    k = probs.shape[1]
    shape = probe.image_shape
    correct = probs.argmax(axis=1) == labels
    averages = np.zeros((k, *shape))
    for c in range(k):
        chosen = correct & (labels == c)
        weights = probs[chosen, c]
        if weights.sum() > 0:
            averages[c] = (
                np.tensordot(weights, images[chosen].astype(np.float64), 1) / weights.sum()
            )
    x = probe.inputs(images)
    grads = np.concatenate(
        [
            np.asarray(probe.gradient(x[i : i + 500], labels[i : i + 500].astype(np.int32)))
            for i in range(0, len(x), 500)
        ]
    ).reshape(-1, *shape)
    share = ink_share(images) if ink is None else np.asarray(ink, np.float64).reshape(shape)
    templates = np.zeros((k, *shape))
    for c in range(k):
        if (labels == c).any():
            templates[c] = grads[labels == c].mean(axis=0) * averages[c] / PIXEL_MAX
    templates[:, share < INK_SHARE_MIN] = np.nan  # (almost) never inked: nothing learned
    how = (
        "template: the average digit's ink × the mean gradient of the class logit "
        f"(blank: pixels inked by < {INK_SHARE_MIN:.0%} of digits)"
    )
    return averages, templates, how


def save_class_inputs(
    averages: np.ndarray,
    templates: np.ndarray,
    class_names: list[str],
    path: str | os.PathLike,
    *,
    how: str,
) -> Path:
    """Write class_inputs.png: per class its average digit over its template (`class_inputs`),
    each row with its colour bar, `how` (the templates' caption) in the title."""
    return save_figure(_class_inputs_figure(averages, templates, class_names, how), path)


def _class_inputs_figure(averages, templates, class_names, how) -> Figure:
    """Two rows of small multiples, one column per class, each row on one colour scale
    with its colour bar: the average digits (0–255), and the templates centred at 0, each
    divided by its own largest value so that every class shows its pattern."""
    k = len(class_names)
    fig = Figure(figsize=(1.3 * k + 1.8, 3.9), layout="constrained")
    axes = fig.subplots(2, k, squeeze=False)
    ink_scale, weight_scale = Normalize(0, PIXEL_MAX), Normalize(-1, 1)  # one per row
    for c in range(k):
        top, bottom = axes[0, c], axes[1, c]
        ink = top.imshow(averages[c], cmap="gray", norm=ink_scale, interpolation="nearest")
        top.set_title(class_names[c], fontsize=10)
        largest = float(np.nanmax(np.abs(templates[c]), initial=0)) or 1.0
        weight = bottom.imshow(
            templates[c] / largest, cmap="RdBu_r", norm=weight_scale, interpolation="nearest"
        )
        label_heatmap(top, "", "average digit" if c == 0 else "")
        label_heatmap(bottom, "", "template" if c == 0 else "")
    fig.colorbar(ink, ax=axes[0, :], shrink=0.9, pad=0.01).set_label("ink", fontsize=8)
    bar = fig.colorbar(weight, ax=axes[1, :], shrink=0.9, pad=0.01)
    bar.set_label("red: for the class\nblue: against\n(÷ the class's largest)", fontsize=8)
    fig.suptitle(
        f"top: average digit per class (weighted by its probability)\nbottom: {how}",
        fontsize=10,
    )
    return fig


@dataclass
class Inspection:
    """What `inspect` measured and wrote: the folder, the statistics per hidden layer
    (`activation_stats`), the files written, the run and the digits asked for."""

    out_dir: Path
    stats: list[dict[str, Any]]
    files: list[Path]
    run_dir: Path
    count: int

    def to_dict(self) -> dict[str, Any]:
        """`inspect --json`: the run, the folder and the statistics."""
        return {"run": str(self.run_dir), "out": str(self.out_dir), "layers": self.stats}

    def table(self):
        """The statistics as a `rich` table, one row per hidden layer."""
        from rich.table import Table

        table = Table("layer", "activation", "units", "mean", "saturated", "dead ReLU")
        for row in self.table_rows():
            table.add_row(*row)
        return table

    def print(self, console) -> None:
        """What `digitlab inspect` prints on a `rich.console.Console`: the run, the table and
        the files written."""
        console.print(f"run {self.run_dir}: {self.count:,} test digits at most")
        console.print(self.table())
        for path in self.files:
            console.print(f"wrote {path}")

    def table_rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """(layer, activation, units, mean, saturated, dead) as text, one row per layer."""
        return [
            (
                s["name"],
                s["activation"],
                str(s["units"]),
                f"{s['mean']:.3f}",
                "–" if s["saturated_fraction"] is None else f"{s['saturated_fraction']:.1%}",
                "–" if s["dead_fraction"] is None else f"{s['dead_fraction']:.1%}",
            )
            for s in self.stats
        ]


def inspect(
    run: Run,
    out_dir: str | Path | None = None,
    *,
    count: int = 1000,
    data_dir: str | Path | None = None,
) -> Inspection:
    """Write weights.png, activations.png, class_inputs.png and inspect.json into
    `out_dir` (default RUN/inspect/), from the first `count` test digits.

    Raises:
        DigitlabError: `count` is below 1; DataError: the test set can't be loaded.
    """
    from digitlab.data import load_dataset

    if count < 1:
        raise DigitlabError(f"--count must be at least 1, got {count}")
    out = Path(out_dir) if out_dir is not None else run.path / INSPECT_DIR
    probe = Probe.of(run)
    (x_train, _), (x_test, y_test) = load_dataset(run.dataset.name, data_dir=data_dir)
    images, labels = x_test[:count], np.asarray(y_test[:count])
    values, probs = probe.activations(images)
    stats = activation_stats(probe, values)
    tiles, first = first_layer_weights(run.model)
    ink = ink_share(x_train)  # the training digits the weights learned from
    averages, templates, how = class_inputs(probe, images, labels, probs, ink=ink)
    files = [
        save_weights(
            tiles,
            out / WEIGHTS_PNG,
            title=f"first-layer weights ({first}; blank: pixels no digit inks)",
            mask=images.max(axis=0) > 0,
        ),
        save_activations(stats, out / ACTIVATIONS_PNG),
        save_class_inputs(averages, templates, run.class_names, out / CLASS_INPUTS_PNG, how=how),
    ]
    record = {
        "run": run.name,
        "digits": len(images),
        "accuracy": float((probs.argmax(axis=1) == labels).mean()),
        "first_layer": first,
        "saturation_margin": SATURATION_MARGIN,
        "layers": stats,
        "templates": how,
    }
    files.append(write_inspect_summary(out, record))
    if out.resolve() == (run.path / INSPECT_DIR).resolve() and (run.path / "report.html").exists():
        from digitlab.report.pages import write_run_report

        files.append(write_run_report(run))  # now with the statistics table
    return Inspection(out, stats, files, run.path, count)
