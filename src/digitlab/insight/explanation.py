"""Why a run answered what it did for one digit (`explain`): every shown layer's
activations, the top-3 classes and a saliency map; the map as an RGBA overlay, PNG or base64;
the explanation's picture; and the occlusion check that keeps saliency honest.
"""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from digitlab.confidence import verdicts
from digitlab.data import PIXEL_MAX
from digitlab.errors import DigitlabError
from digitlab.insight.probe import IG_STEPS, METHODS, LayerInfo, Probe
from digitlab.plots import label_heatmap, save_figure
from digitlab.runs import INSPECT_DIR, Run

MAX_MAPS = 8  # conv feature maps per layer in an explanation
MAX_MAP_SIDE = 14  # …each downsampled to at most 14×14
# Ticks per colour bar and per strip of units, at most: every tick is an artist to lay out
# and draw, and the picture is most of `explain`'s time (issue 23)
BAR_TICKS, UNIT_TICKS = 4, 5
ROUND_STEPS = (1, 2, 2.5, 5, 10)  # a colour bar's tick steps: 0, 50, 100, not 0, 80, 160


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


@dataclass(frozen=True)
class Explanation:
    """Why a run answered what it did for one digit (`explain`'s result).

    `top3`: [{"digit", "label", "probability"}]; `target`: the class explained (default the
    predicted one); `saliency`: 28×28 list of floats; `layers`: [{"name", "type",
    "activation", "shape", "values" (Dense: one per unit) or "maps" (conv: at most 8, at
    most 14×14) with "channels"}], the output layer last.
    """

    digit: int
    label: str
    probabilities: list[float]
    top3: list[dict[str, Any]]
    target: int
    method: str
    saliency: list[list[float]]
    layers: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """The fields by name, in order: what `explain --json` prints after the run and png."""
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def table(self):
        """The top-3 classes as `digitlab explain` prints them."""
        from rich.table import Table

        table = Table("class", "probability")
        for row in self.top3:
            table.add_row(row["label"], f"{row['probability']:.3f}")
        return table


def explain(
    run: Run, image: np.ndarray, *, target: int | None = None, method: str = "integrated"
) -> Explanation:
    """Why `run` answers what it does for one uint8 28×28 `image`: the class explained is
    `target` (default the predicted one), the saliency by `method` (one of `METHODS`).

    Raises:
        DigitlabError: an unknown method, or a target that is not a class of the run.
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
    return Explanation(
        digit=best,
        label=names[best],
        probabilities=[round(float(p), 6) for p in probs],
        top3=[
            {"digit": int(k), "label": names[k], "probability": round(float(probs[k]), 6)}
            for k in top
        ],
        target=int(np.asarray(chosen)[0]),
        method=method,
        saliency=np.asarray(saliency).reshape(probe.image_shape).astype(float).tolist(),
        layers=[
            _layer_values(info, np.asarray(v)[0])
            for info, v in zip(probe.layers, values, strict=True)
        ],
    )


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
    image: np.ndarray,
    explanation: Explanation | dict[str, Any],
    path: str | os.PathLike,
    *,
    class_names: Sequence[str] | None = None,
) -> Path:
    """One PNG: the 28×28 the model sees, the saliency overlay on it, the top-3, and a strip
    per layer (Dense: one cell per unit; conv: the feature maps side by side), each with its
    colour bar; the output layer's cells are labelled with `class_names` (default: the
    class numbers, and the top 3's labels)."""
    if isinstance(explanation, Explanation):
        explanation = explanation.to_dict()
    if class_names is not None:
        explanation = {**explanation, "class_names": list(class_names)}
    return save_figure(_explanation_figure(np.asarray(image), explanation), path)


def _explanation_figure(image: np.ndarray, explanation: dict[str, Any]) -> Figure:
    layers = explanation["layers"]
    # Fixed margins, in inches: a layout engine measures the labels by drawing the figure
    # once more (tight: 0.2 s of `explain`'s 1.5; constrained: twice). The same panels, no
    # label cut or overlapping (tests/test_pictures.py).
    height = 3.6 + 1.25 * len(layers)
    fig = Figure(figsize=(10, height))
    rows, gap, top, bottom = 1 + len(layers), 0.75, 0.35, 0.75  # inches
    inside = height - top - bottom
    grid = fig.add_gridspec(
        rows,
        3,
        height_ratios=[3.4] + [1] * len(layers),
        left=0.6 / 10,
        right=1 - 0.55 / 10,
        top=1 - top / height,
        bottom=bottom / height,
        hspace=gap * rows / (inside - gap * (rows - 1)),  # a fraction of the mean row's height
        wspace=0.45,
    )
    _digit_panel(fig, fig.add_subplot(grid[0, 0]), image)
    _saliency_panel(fig, fig.add_subplot(grid[0, 1]), image, explanation)
    _top3_panel(fig.add_subplot(grid[0, 2]), explanation["top3"])
    for row, layer in enumerate(layers, start=1):
        output = row == len(layers)
        _layer_strip(fig, fig.add_subplot(grid[row, :]), layer, explanation, output=output)
    return fig


def _pixel_axes(ax, image: np.ndarray) -> None:
    rows, cols = image.shape[:2]
    label_heatmap(ax, f"{cols} pixels", f"{rows} pixels")


def _bar_ticks() -> MaxNLocator:
    return MaxNLocator(BAR_TICKS, steps=ROUND_STEPS)


def _digit_panel(fig: Figure, ax, image: np.ndarray) -> None:
    shown = ax.imshow(image, cmap="gray", vmin=0, vmax=PIXEL_MAX, interpolation="nearest")
    ax.set_title("what the model sees", fontsize=10)
    _pixel_axes(ax, image)
    bar = fig.colorbar(shown, ax=ax, shrink=0.8, ticks=_bar_ticks())
    bar.set_label("ink (pixel value)", fontsize=8)


def _saliency_panel(fig: Figure, ax, image: np.ndarray, explanation: dict[str, Any]) -> None:
    """The saliency over the digit, in `saliency_rgba`'s colours (a colour map of the same
    ramp, from most against, blue, through clear to most for, red), with its colour bar."""
    from matplotlib.colors import ListedColormap, Normalize

    saliency = np.asarray(explanation["saliency"], np.float64)
    ax.imshow(image, cmap="gray", vmin=0, vmax=PIXEL_MAX, interpolation="nearest")
    peak = float(np.abs(saliency).max()) or 1.0
    colours = saliency_rgba(np.linspace(-1, 1, 256)[None])[0]  # uint8 RGBA, as drawn
    ramp = ListedColormap(colours / np.iinfo(np.uint8).max)
    shown = ax.imshow(saliency, cmap=ramp, norm=Normalize(-peak, peak), interpolation="nearest")
    target = explanation["target"]
    ax.set_title(f"saliency for {target} ({explanation['method']})", fontsize=10)
    _pixel_axes(ax, image)
    bar = fig.colorbar(shown, ax=ax, shrink=0.8, ticks=_bar_ticks())
    bar.set_label(f"red: for {target}, blue: against", fontsize=8)


def _top3_panel(ax, top3: list[dict[str, Any]]) -> None:
    """The top 3 as bars, each with its probability: inside a long bar (white), after a
    short one (dark), so no label runs off its bar or the axes."""
    top = top3[::-1]
    ax.barh([t["label"] for t in top], [t["probability"] for t in top], color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_title("top 3", fontsize=10)
    ax.set_xlabel("probability", fontsize=8)
    ax.set_ylabel("class", fontsize=8)
    for i, t in enumerate(top):
        p = t["probability"]
        inside = p > 0.5
        ax.text(
            p - 0.02 if inside else p + 0.02,
            i,
            f"{p:.1%}",
            va="center",
            ha="right" if inside else "left",
            color="white" if inside else "black",
            fontsize=9,
        )


def _layer_strip(fig: Figure, ax, layer: dict[str, Any], explanation, *, output: bool) -> None:
    """One layer's activations as a strip of cells with its colour bar: a Dense layer's
    units (the output layer's labelled by class), or a conv layer's maps side by side."""
    title = f"{layer['name']} ({layer['type']}, {layer['activation']})"
    ax.set_title(title, fontsize=8, loc="left")
    if "maps" in layer:
        maps = np.asarray(layer["maps"])
        gap = np.full((maps.shape[1], 1), np.nan)
        strip = np.concatenate([p for m in maps for p in (m, gap)][:-1], axis=1)
        shown = ax.imshow(strip, cmap="viridis", interpolation="nearest", aspect="equal")
        label_heatmap(ax, "feature map (channel): the most active, averaged to at most 14×14")
        ax.xaxis.get_label().set_horizontalalignment("left")  # from the maps' left edge, as
        ax.xaxis.set_label_coords(0, -0.4)  # the title: a few maps are narrower than it
        side = maps.shape[2] + 1
        ax.set_xticks(
            [k * side + (side - 2) / 2 for k in range(len(maps))],
            labels=[str(c) for c in layer["channels"]],
            fontsize=7,
        )
    else:
        values = np.asarray(layer["values"])[None]
        shown = ax.imshow(values, cmap="viridis", interpolation="nearest", aspect="auto")
        if output:
            names = _class_names(explanation, values.shape[1])
            label_heatmap(ax, "class")
            slant = {"rotation": 20, "ha": "right"} if max(map(len, names)) > 2 else {}
            ax.set_xticks(range(len(names)), labels=names, fontsize=8, **slant)
        else:
            label_heatmap(ax, "unit")
            ticks = MaxNLocator(UNIT_TICKS, integer=True).tick_values(0, values.shape[1] - 1)
            ticks = [int(t) for t in ticks if 0 <= t < values.shape[1]]
            ax.set_xticks(ticks, labels=[str(t) for t in ticks], fontsize=7)
    bar = fig.colorbar(shown, ax=ax, fraction=0.02, pad=0.01, ticks=_bar_ticks())
    bar.set_label("activation", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    ax.set_anchor("W")  # equal-aspect maps start at the left, under the title


def _class_names(explanation: dict[str, Any], count: int) -> list[str]:
    """The output cells' names: the run's class names, else those the top 3 name and the
    class numbers for the rest."""
    names = explanation.get("class_names")
    if isinstance(names, list | tuple) and len(names) == count:
        return [str(name) for name in names]
    known = {int(t["digit"]): str(t["label"]) for t in explanation["top3"]}
    return [known.get(k, str(k)) for k in range(count)]


# ------------------------------------------------------------------------ `digitlab explain`
@dataclass(frozen=True)
class DigitChoice:
    """The digit to explain: an image file (preprocessed like `predict`'s unless `raw`), or
    the test split's digit number `index`; exactly one of the two.

    Raises:
        DigitlabError: neither or both are given.
    """

    image: str | os.PathLike | None = None
    index: int | None = None
    raw: bool = False

    def __post_init__(self) -> None:
        if (self.image is None) == (self.index is None):
            raise DigitlabError("give one image file or --index N (a test-split digit)")

    def load(self, run: Run, data_dir: str | Path | None = None) -> tuple[np.ndarray, str]:
        """The uint8 digit in `run`'s image shape, and its name in the picture's file name
        (`test<index>` or the image file's stem).

        Raises:
            DigitlabError: the index is outside the test split; ImageError: the file is
                missing or holds no digit.
        """
        if self.index is not None:
            from digitlab.data import load_dataset

            _, (x_test, _) = load_dataset(run.dataset.name, data_dir=data_dir)
            if not 0 <= self.index < len(x_test):
                raise DigitlabError(
                    f"--index {self.index} is out of range: the test split has {len(x_test)}"
                )
            return x_test[self.index], f"test{self.index}"
        from digitlab.prediction import load_image_files

        (digit,) = load_image_files([self.image], raw=self.raw, shape=run.image_shape)
        return digit, Path(self.image).stem


@dataclass(frozen=True)
class ExplainedDigit:
    """What `digitlab explain` shows: the run, the picture written, the explanation, and
    the confidence verdict on the digit (`confidence.verdicts`: `confidence`, `confident`,
    `reason`; empty when not judged)."""

    run_dir: Path
    png: Path
    explanation: Explanation
    verdict: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """`explain --json`: the run, the picture, the explanation's fields, then the verdict
        (`confidence`, `confident`, `reason`, as `POST /explain` gives them)."""
        return {
            "run": str(self.run_dir),
            "png": str(self.png),
            **self.explanation.to_dict(),
            **self.verdict,
        }

    def verdict_text(self) -> str:
        """The verdict in words: `confident`, `not confident: unsure` or `not a digit`, or
        that the run has no thresholds to judge with."""
        if self.verdict.get("confident") is None:
            return "verdict: – (the run has no confidence thresholds: digitlab calibrate RUN)"
        if self.verdict["confident"]:
            return "verdict: confident"
        return f"verdict: not confident ({self.verdict.get('reason')})"

    def print(self, console) -> None:
        """The top-3 table, the verdict and the picture written, on a `rich.console.Console`."""
        console.print(self.explanation.table())
        console.print(self.verdict_text(), markup=False, highlight=False)
        console.print(f"wrote {self.png}")


def explain_digit(
    run: Run,
    choice: DigitChoice,
    *,
    target: int | None = None,
    method: str = "integrated",
    out: str | os.PathLike | None = None,
    data_dir: str | Path | None = None,
) -> ExplainedDigit:
    """`digitlab explain`: explain the chosen digit (`explain`), draw it to `out`
    (default RUN/inspect/explain-<name>.png, `save_explanation`), and judge it as `predict`
    does (`confidence.verdicts`)."""
    digit, name = choice.load(run, data_dir)
    explanation = explain(run, digit, target=target, method=method)
    path = Path(out) if out is not None else run.path / INSPECT_DIR / f"explain-{name}.png"
    save_explanation(digit, explanation, path, class_names=run.class_names)
    verdict = verdicts(run, np.asarray(digit)[None], np.array([explanation.probabilities]))[0]
    return ExplainedDigit(run.path, path, explanation, verdict)


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
