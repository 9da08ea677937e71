"""Look inside a trained run: what the network learned (`inspect`) and why it answered (`explain`).

- `first_layer_weights`: the first Dense layer's weights as one 28×28 picture per unit (or a
  conv net's first filters), drawn on a diverging scale centred at 0 by `save_weights`.
- `activation_stats`: per hidden layer, on N test digits: a histogram, the share of saturated
  sigmoid/tanh activations (within 0.01 of a bound), the share of dead ReLU units (zero on
  every digit), and the mean activation per unit, sorted.
- `class_inputs`: per class, the mean of the correctly classified test digits weighted by
  the class probability, beside the class's linear "template".
- `explain`: for one digit, every shown layer's activations, the top-3 classes and a saliency
  map: the gradient of the class score (the output layer's pre-activation, its logit) with
  respect to the input pixels, by JAX autodiff through the model's `stateless_call`, or
  integrated gradients (Sundararajan et al. 2017) from a black image, the default.

Integrated gradients is the default because it measures better on the occlusion check
(`occlusion_drop`): removing the 5% of pixels it ranks highest lowers the class probability
far more than removing 5% random ink pixels, while the plain gradient ranks background
pixels high, where removing "ink" changes nothing (see `tests/test_insight.py` and the
README's "What a saliency map does and doesn't tell you").

Everything here reads a `Run`; figures are matplotlib `Figure`s written atomically like
`digitlab.plots`. The compiled functions are built once per run (`Probe.of(run)`).
"""

from __future__ import annotations

import base64
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from digitlab.data import PIXEL_MAX
from digitlab.errors import DigitlabError
from digitlab.plots import save_figure
from digitlab.runs import INSPECT_DIR, Run, write_inspect_summary

WEIGHTS_PNG = "weights.png"
ACTIVATIONS_PNG = "activations.png"
CLASS_INPUTS_PNG = "class_inputs.png"
SHOWN_LAYERS = ("Dense", "Conv2D", "Activation")  # the layers whose outputs are pictured
SATURATION_MARGIN = 0.01
BOUNDS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "hard_sigmoid": (0.0, 1.0)}
RELU_LIKE = ("relu", "relu6")
METHODS = ("integrated", "gradient")
IG_STEPS = 32  # Riemann steps of integrated gradients; the attributions' sum is within ~1%
MAX_MAPS = 8  # conv feature maps per layer in an explanation
MAX_MAP_SIDE = 14  # …each downsampled to at most 14×14
MAX_TILES = 256  # first-layer units drawn in weights.png
HISTOGRAM_BINS = 30


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "linear") if activation is not None else "linear"


@dataclass(frozen=True)
class LayerInfo:
    index: int  # in model.layers
    name: str
    type: str
    activation: str
    shape: tuple[int, ...]  # one digit's output shape


class Probe:
    """One run's model as compiled JAX functions: every shown layer's output, the logits,
    and the gradients of a class logit with respect to the input."""

    def __init__(self, run: Run):
        import jax
        import jax.numpy as jnp
        import keras

        from digitlab.fastfit import _configure_jax

        _configure_jax()
        if keras.backend.backend() != "jax":
            raise DigitlabError("inspect and explain need the JAX backend (KERAS_BACKEND=jax)")
        self.run = run
        model = run.model
        self.input_shape = tuple(run.spec.input_shape)
        self.image_shape = tuple(run.image_shape)
        shown = [
            (i, layer)
            for i, layer in enumerate(model.layers)
            if type(layer).__name__ in SHOWN_LAYERS
        ]
        self.layers = [
            LayerInfo(
                i,
                layer.name,
                type(layer).__name__,
                _activation_name(layer),
                tuple(int(d) for d in layer.output.shape[1:]),
            )
            for i, layer in shown
        ]
        last = model.layers[-1]
        outputs = [layer.output for _, layer in shown] + [last.input]
        self._graph = keras.Model(model.inputs, outputs)
        trainable = [jnp.array(v.value, copy=True) for v in self._graph.trainable_variables]
        non_trainable = [jnp.array(v.value, copy=True) for v in self._graph.non_trainable_variables]
        kernel = jnp.array(last.kernel.value, copy=True)
        bias = jnp.array(last.bias.value, copy=True) if last.use_bias else 0.0
        graph = self._graph

        def forward(x):
            values = graph.stateless_call(trainable, non_trainable, x, training=False)[0]
            logits = values[-1].reshape(values[-1].shape[0], -1) @ kernel + bias
            return values[:-1], logits

        def score(x, target):
            logits = forward(x)[1]
            return jnp.take_along_axis(logits, target[:, None], axis=1).sum()

        gradient = jax.grad(score)

        def integrated(x, target, steps):
            alphas = (jnp.arange(steps, dtype=jnp.float32) + 0.5) / steps
            scaled = alphas.reshape(-1, *([1] * x.ndim)) * x[None]
            grads = jax.vmap(lambda xs: gradient(xs, target))(scaled)
            return grads.mean(axis=0) * x

        def explain(x, target, steps):
            values, logits = forward(x)
            target = jnp.where(target < 0, jnp.argmax(logits, axis=1), target)
            saliency = integrated(x, target, steps) if steps else gradient(x, target)
            return values, logits, target, saliency

        self.forward = jax.jit(forward)
        self.gradient = jax.jit(gradient)
        self._explain = jax.jit(explain, static_argnums=2)
        self.output_activation = _activation_name(last)

    @classmethod
    def of(cls, run: Run) -> Probe:
        """The probe of `run`, built once per run object (compiling is the slow part)."""
        probe = run.__dict__.get("_insight_probe")
        if probe is None:
            probe = run.__dict__["_insight_probe"] = cls(run)
        return probe

    def inputs(self, images: np.ndarray) -> np.ndarray:
        from digitlab.model import prepare_inputs

        return prepare_inputs(images, self.input_shape)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Class probabilities from logits, as `Run.predict_proba` gives them."""
        import keras

        from digitlab.model import to_probabilities

        activation = self.output_activation
        outputs = np.asarray(logits, np.float64)
        if activation not in {"linear", "softmax"}:
            outputs = np.asarray(keras.activations.get(activation)(logits), np.float64)
        return to_probabilities(outputs, "linear" if activation == "softmax" else activation)

    def activations(self, images: np.ndarray, batch: int = 500):
        """Every shown layer's outputs (a list of N×… arrays) and the N×K probabilities."""
        values: list[list[np.ndarray]] = [[] for _ in self.layers]
        probs = []
        x = self.inputs(images)
        for start in range(0, len(x), batch):
            outs, logits = self.forward(x[start : start + batch])
            for store, out in zip(values, outs, strict=True):
                store.append(np.asarray(out))
            probs.append(self.probabilities(np.asarray(logits)))
        return [np.concatenate(v) for v in values], np.concatenate(probs)

    def saliency(
        self,
        images: np.ndarray,
        targets: np.ndarray | None = None,
        method: str = "integrated",
        steps: int = IG_STEPS,
    ) -> np.ndarray:
        """Attributions shaped like the images (N×28×28): for each digit, how the score of
        its target class (default: the predicted one) depends on each pixel.

        `method="gradient"`: d logit / d pixel. `"integrated"`: integrated gradients from a
        black image, `x · mean_α ∇logit(α·x)`; the attributions sum to about the logit's
        change from the black image, and are 0 where there is no ink.
        """
        if method not in METHODS:
            raise DigitlabError(f"saliency method must be one of {', '.join(METHODS)}")
        x = self.inputs(images)
        if targets is None:
            targets = np.full(len(x), -1)
        targets = np.asarray(targets, np.int32)
        out = []
        for start in range(0, len(x), 100):
            *_, s = self._explain(
                x[start : start + 100],
                targets[start : start + 100],
                steps if method == "integrated" else 0,
            )
            out.append(np.asarray(s))
        return np.concatenate(out).reshape(len(x), *self.image_shape)


# ------------------------------------------------------------------------------------ explain
def _downsample(maps: np.ndarray, side: int = MAX_MAP_SIDE) -> np.ndarray:
    """H×W×C maps average-pooled by a whole factor so each side is at most `side`."""
    h, w = maps.shape[:2]
    f = max(1, math.ceil(max(h, w) / side))
    hh, ww = h // f, w // f
    return maps[: hh * f, : ww * f].reshape(hh, f, ww, f, -1).mean(axis=(1, 3))


def _layer_values(info: LayerInfo, value: np.ndarray) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": info.name,
        "type": info.type,
        "activation": info.activation,
        "shape": list(info.shape),
    }
    if value.ndim == 3:  # conv feature maps: the most active MAX_MAPS, downsampled
        order = np.argsort(-value.mean(axis=(0, 1)), kind="stable")[:MAX_MAPS]
        small = _downsample(value[..., order])
        entry["maps"] = [np.round(small[..., k], 4).tolist() for k in range(small.shape[-1])]
        entry["channels"] = [int(c) for c in order]
    else:
        entry["values"] = [round(float(v), 4) for v in value.reshape(-1)]
    return entry


def explain(
    run: Run, image: np.ndarray, *, target: int | None = None, method: str = "integrated"
) -> dict[str, Any]:
    """Why `run` answers what it does for one uint8 28×28 `image`.

    Returns:
        {"digit", "label", "probabilities", "top3": [{"digit", "label", "probability"}],
        "target": the class explained (default the predicted one), "method",
        "saliency": 28×28 list of floats, "layers": [{"name", "type", "activation",
        "shape", "values" (Dense: one per unit) or "maps" (conv: at most 8, at most 14×14)
        with "channels"}]}. The output layer is the last entry.
    """
    probe = Probe.of(run)
    if method not in METHODS:
        raise DigitlabError(f"--method must be one of {', '.join(METHODS)}, got '{method}'")
    if target is not None and not 0 <= target < len(run.class_names):
        raise DigitlabError(f"--target must be 0–{len(run.class_names) - 1}, got {target}")
    x = probe.inputs(np.asarray(image)[None])
    steps = IG_STEPS if method == "integrated" else 0
    values, logits, chosen, saliency = probe._explain(
        x, np.array([-1 if target is None else target], np.int32), steps
    )
    probs = probe.probabilities(np.asarray(logits))[0]
    names = run.class_names
    best = int(probs.argmax())
    top = np.argsort(-probs, kind="stable")[:3]
    return {
        "digit": best,
        "label": names[best],
        "probabilities": [round(float(p), 6) for p in probs],
        "top3": [
            {"digit": int(k), "label": names[k], "probability": round(float(probs[k]), 6)}
            for k in top
        ],
        "target": int(np.asarray(chosen)[0]),
        "method": method,
        "saliency": np.asarray(saliency).reshape(probe.image_shape).astype(float).tolist(),
        "layers": [
            _layer_values(info, np.asarray(v)[0])
            for info, v in zip(probe.layers, values, strict=True)
        ],
    }


def saliency_rgba(saliency: np.ndarray) -> np.ndarray:
    """A saliency map as an RGBA overlay: red where a pixel's ink speaks for the class, blue
    against it, opacity by magnitude (scaled to the map's largest absolute value)."""
    s = np.asarray(saliency, np.float64)
    peak = float(np.abs(s).max()) or 1.0
    norm = s / peak
    rgba = np.zeros((*s.shape, 4), np.uint8)
    rgba[..., 0] = np.where(norm > 0, 230, 30)
    rgba[..., 1] = 40
    rgba[..., 2] = np.where(norm > 0, 30, 230)
    rgba[..., 3] = np.rint(np.clip(np.abs(norm), 0, 1) ** 0.7 * 255).astype(np.uint8)
    return rgba


def saliency_png(saliency: np.ndarray) -> bytes:
    """`saliency_rgba` as PNG bytes (a 28×28 transparent overlay)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(saliency_rgba(saliency), "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def saliency_base64(saliency: np.ndarray) -> str:
    return base64.b64encode(saliency_png(saliency)).decode("ascii")


def save_explanation(
    image: np.ndarray, explanation: dict[str, Any], path: str | os.PathLike
) -> Path:
    """One PNG: the 28×28 the model sees, the saliency overlay on it, the top-3, and a strip
    per layer (Dense: one cell per unit; conv: the feature maps side by side)."""
    return save_figure(_explanation_figure(np.asarray(image), explanation), path)


def _explanation_figure(image: np.ndarray, explanation: dict[str, Any]) -> Figure:
    layers = explanation["layers"]
    fig = Figure(figsize=(9, 3.2 + 0.75 * len(layers)), layout="constrained")
    grid = fig.add_gridspec(1 + len(layers), 3, height_ratios=[4] + [1] * len(layers))
    ax = fig.add_subplot(grid[0, 0])
    ax.imshow(image, cmap="gray", vmin=0, vmax=PIXEL_MAX, interpolation="nearest")
    ax.set_title("what the model sees", fontsize=10)
    ax.set_axis_off()
    ax = fig.add_subplot(grid[0, 1])
    saliency = np.asarray(explanation["saliency"])
    ax.imshow(image, cmap="gray", vmin=0, vmax=PIXEL_MAX, interpolation="nearest")
    ax.imshow(saliency_rgba(saliency), interpolation="nearest")
    target = explanation["target"]
    ax.set_title(f"saliency for {target} ({explanation['method']})", fontsize=10)
    ax.set_axis_off()
    ax = fig.add_subplot(grid[0, 2])
    top = explanation["top3"][::-1]
    ax.barh([t["label"] for t in top], [t["probability"] for t in top], color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_title("top 3", fontsize=10)
    for i, t in enumerate(top):
        ax.text(0.02, i, f"{t['probability']:.1%}", va="center", color="white", fontsize=9)
    for row, layer in enumerate(layers, start=1):
        ax = fig.add_subplot(grid[row, :])
        label = f"{layer['name']} ({layer['type']}, {layer['activation']})"
        if "maps" in layer:
            maps = np.asarray(layer["maps"])
            gap = np.full((maps.shape[1], 1), np.nan)
            strip = np.concatenate([p for m in maps for p in (m, gap)][:-1], axis=1)
            ax.imshow(strip, cmap="viridis", interpolation="nearest", aspect="equal")
        else:
            values = np.asarray(layer["values"])[None]
            ax.imshow(values, cmap="viridis", interpolation="nearest", aspect="auto")
        ax.set_title(label, fontsize=8, loc="left")
        ax.set_axis_off()
    return fig


# ------------------------------------------------------------------------------------ inspect
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
    ax.set_axis_off()
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
        right.grid(alpha=0.3)
    return fig


def class_inputs(
    probe: Probe, images: np.ndarray, labels: np.ndarray, probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, str]:
    """Per class: the mean of the correctly classified digits weighted by the class
    probability (K×28×28, 0–255), and the class's linear template (K×28×28).

    The template is the weight map of the network linearised around the digits of that
    class: the mean gradient of the class logit with respect to the pixels. For a network
    of one Dense layer it is exactly that layer's weights for the class. (The plain product
    of the Dense kernels is not shown: it ignores the biases and the sigmoid's offset, and
    is dominated by border pixels that no digit ever inks.) Returns (averages, templates,
    a caption)."""
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
    templates = np.zeros((k, *shape))
    for c in range(k):
        if (labels == c).any():
            templates[c] = grads[labels == c].mean(axis=0)
    templates[:, images.max(axis=0) == 0] = np.nan  # never inked: weights never trained
    how = "linear template (mean gradient of the class logit; blank: pixels no digit inks)"
    return averages, templates, how


def save_class_inputs(
    averages: np.ndarray,
    templates: np.ndarray,
    class_names: list[str],
    path: str | os.PathLike,
    *,
    how: str,
) -> Path:
    return save_figure(_class_inputs_figure(averages, templates, class_names, how), path)


def _class_inputs_figure(averages, templates, class_names, how) -> Figure:
    k = len(class_names)
    fig = Figure(figsize=(1.3 * k + 0.5, 3.3), layout="constrained")
    axes = fig.subplots(2, k, squeeze=False)
    for c in range(k):
        top, bottom = axes[0, c], axes[1, c]
        top.imshow(averages[c], cmap="gray", vmin=0, vmax=PIXEL_MAX, interpolation="nearest")
        top.set_title(class_names[c], fontsize=10)
        limit = float(np.nanmax(np.abs(templates[c]), initial=0)) or 1.0
        bottom.imshow(templates[c], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        top.set_axis_off()
        bottom.set_axis_off()
    fig.suptitle(f"top: average digit per class (weighted by its probability); bottom: {how}")
    return fig


@dataclass
class Inspection:
    out_dir: Path
    stats: list[dict[str, Any]]
    files: list[Path]

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
    _, (x_test, y_test) = load_dataset(run.dataset.name, data_dir=data_dir)
    images, labels = x_test[:count], np.asarray(y_test[:count])
    values, probs = probe.activations(images)
    stats = activation_stats(probe, values)
    tiles, first = first_layer_weights(run.model)
    averages, templates, how = class_inputs(probe, images, labels, probs)
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
    return Inspection(out, stats, files)


# ---------------------------------------------------------------------------- sanity measures
def occlusion_drop(
    run: Run,
    images: np.ndarray,
    *,
    method: str = "integrated",
    fraction: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Mean drop of the predicted class's probability when the top `fraction` of pixels by
    saliency are set to 0 (black), and when as many random ink pixels are.

    A saliency map that reflects the model makes the first drop the larger one."""
    probe = Probe.of(run)
    images = np.asarray(images, np.uint8)
    flat = images.reshape(len(images), -1)
    n = max(1, round(fraction * flat.shape[1]))
    base = run.predict_proba(images)
    target = base.argmax(axis=1)
    saliency = probe.saliency(images, target, method=method).reshape(len(images), -1)
    rng = np.random.default_rng(seed)
    by_saliency, by_chance = flat.copy(), flat.copy()
    for i in range(len(flat)):
        by_saliency[i, np.argsort(-saliency[i], kind="stable")[:n]] = 0
        ink = np.flatnonzero(flat[i])
        by_chance[i, rng.choice(ink, size=min(n, len(ink)), replace=False)] = 0
    rows = np.arange(len(images))

    def drop(occluded: np.ndarray) -> float:
        after = run.predict_proba(occluded.reshape(images.shape))
        return float((base[rows, target] - after[rows, target]).mean())

    return drop(by_saliency), drop(by_chance)
