"""An experiment's figures, as PNG: curves with a band across seeds, gaps, accuracies, activations.

Built like `digitlab.plots`: `Figure` objects directly (no pyplot, no GUI backend), each
written atomically. The `_*_figure` helpers return the figure, for tests to inspect.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from digitlab.experiments.schema import Definition
from digitlab.plots import _save

AXES = {
    "epoch": "epochs",
    "updates": "weight updates",
    "seconds": "training seconds",
}


# The pre-activation percentiles drawn per layer: each its own line style, so the legend
# tells the 15th from the 85th.
PERCENTILE_STYLES = {"p15": ":", "p50": "-", "p85": "--"}


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def _band(ax, x: np.ndarray, runs: Sequence[Sequence[float]], color, label: str, style: str):
    """The mean across seeds as a line, the min–max across seeds as a band."""
    length = min(len(r) for r in runs)
    values = np.array([list(r)[:length] for r in runs], dtype=float)
    x = np.asarray(x[:length], dtype=float)
    ax.plot(
        x, values.mean(axis=0), style, color=color, label=label, marker="." if length < 3 else None
    )
    if len(values) > 1:
        ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=color, alpha=0.15, lw=0)


def _x(curve: dict, axis: str) -> np.ndarray:
    epochs = len(curve["loss"])
    if axis == "updates":
        return np.arange(1, epochs + 1) * curve["updates_per_epoch"]
    if axis == "seconds":
        return np.cumsum(curve["epoch_seconds"][:epochs])
    return np.arange(1, epochs + 1)


def _top(curves: dict[str, list[dict]]) -> float:
    """A y limit that keeps the curves readable: the first epochs' spikes are cut off."""
    values = [x for runs in curves.values() for c in runs for k in ("loss", "val_loss")
              for x in c.get(k, []) if np.isfinite(x)]  # fmt: skip
    return float(np.percentile(values, 95)) * 1.15 if values else 1.0


def _loss_figure(curves: dict[str, list[dict]], axes: Sequence[str]) -> Figure:
    """Loss curves, mean across seeds with a min–max band. Against epochs only: one panel per
    variant, training (solid) and validation (dashed) overlaid, as in `digitlab compare`, on a
    shared scale. Against several axes: one panel per axis, the variants overlaid, validation
    (solid) over training (thin, dotted)."""
    top = _top(curves)
    shown = {name: runs for name, runs in curves.items() if runs}
    if list(axes) == ["epoch"]:
        cols = min(len(shown), 3) or 1
        rows = -(-len(shown) // cols) or 1
        fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
        panels = fig.subplots(rows, cols, squeeze=False, sharey=True).ravel()
        for ax in panels[len(shown) :]:
            ax.set_axis_off()
        for ax, (name, runs) in zip(panels, shown.items(), strict=False):
            x = np.arange(1, min(len(c["loss"]) for c in runs) + 1)
            _band(ax, x, [c["loss"] for c in runs], "#1f77b4", "training", "-")
            if all(c.get("val_loss") for c in runs):
                _band(ax, x, [c["val_loss"] for c in runs], "#d62728", "validation", "--")
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("epoch")
            ax.set_ylim(0, top)
            ax.grid(alpha=0.3)
        panels[0].set_ylabel("loss")
        panels[0].legend(fontsize=8)
        fig.suptitle("training vs validation loss (mean of seeds, band: min–max)")
        return fig
    fig = Figure(figsize=(5.2 * len(axes), 4.2), layout="constrained")
    panels = fig.subplots(1, len(axes), squeeze=False).ravel()
    for ax, axis in zip(panels, axes, strict=True):
        for color, (name, runs) in zip(_colors(len(shown)), shown.items(), strict=True):
            length = min(len(c["loss"]) for c in runs)
            x = np.mean([_x(c, axis)[:length] for c in runs], axis=0)
            if all(c.get("val_loss") for c in runs):
                _band(ax, x, [c["val_loss"] for c in runs], color, f"{name} validation", "-")
            ax.plot(x, np.mean([c["loss"][:length] for c in runs], axis=0), ":", color=color,
                    lw=1, label=f"{name} training")  # fmt: skip
        if axis != "epoch":
            ax.set_xscale("log")
        ax.set_ylim(0, top)
        ax.set_xlabel(AXES[axis])
        ax.set_ylabel("loss")
        ax.set_title(f"loss per {AXES[axis].removesuffix('s')}")
        ax.grid(alpha=0.3)
    panels[0].legend(fontsize=7, ncols=2 if len(shown) > 3 else 1)
    return fig


def _per_variant(ax, variants: list[dict[str, Any]], key: str, scale: float = 1.0) -> None:
    """Points per seed plus the mean (a bar) of `variants[i][key]`."""
    for i, variant in enumerate(variants):
        values = np.asarray(variant[key]["values"], dtype=float) * scale
        if not len(values):
            continue
        ax.bar(i, values.mean(), color="#cfd8e3", edgecolor="#4a5a70", width=0.6)
        jitter = np.linspace(-0.15, 0.15, len(values)) if len(values) > 1 else [0.0]
        ax.plot(i + np.asarray(jitter), values, "o", color="#1f4e99", ms=5)
    ax.set_xticks(range(len(variants)), [v["name"] for v in variants], rotation=20, ha="right")
    ax.grid(axis="y", alpha=0.3)


def _gap_figure(variants: list[dict[str, Any]]) -> Figure:
    fig = Figure(figsize=(max(5, 1.2 * len(variants) + 2), 4), layout="constrained")
    ax = fig.add_subplot()
    _per_variant(ax, variants, "generalization_gap")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("validation loss − training loss (end)")
    ax.set_title("generalisation gap (bars: mean; points: seeds)")
    return fig


def _accuracy_figure(variants: list[dict[str, Any]]) -> Figure:
    fig = Figure(figsize=(max(5, 1.2 * len(variants) + 2), 4), layout="constrained")
    ax = fig.add_subplot()
    _per_variant(ax, variants, "test_accuracy", scale=100)
    values = [x * 100 for v in variants for x in v["test_accuracy"]["values"]]
    if values:
        low, high = min(values), max(values)
        pad = max((high - low) * 0.3, 0.5)
        ax.set_ylim(max(0, low - pad), min(100, high + pad))
    ax.set_ylabel("test accuracy %")
    ax.set_title("test accuracy (bars: mean; points: seeds)")
    return fig


def _activations_figure(variants: list[dict[str, Any]]) -> Figure:
    """Per variant (rows) and hidden layer (columns): pre-activation percentiles over epochs
    (left axis) and the saturated or dead fraction (right axis, red), mean over seeds."""
    rows = [v for v in variants if v["activations"]]
    layers = max((len(next(iter(v["activations"].values()))) for v in rows), default=0)
    if not rows or not layers:
        fig = Figure(figsize=(4, 2))
        fig.text(0.5, 0.5, "no activation statistics", ha="center")
        return fig
    fig = Figure(figsize=(3.6 * layers, 2.3 * len(rows)), layout="constrained")
    grid = fig.subplots(len(rows), layers, squeeze=False)
    for r, variant in enumerate(rows):
        runs = list(variant["activations"].values())
        names = list(runs[0])
        for c in range(layers):
            ax = grid[r][c]
            if c >= len(names):
                ax.set_axis_off()
                continue
            layer = names[c]
            stats = [run[layer] for run in runs if layer in run]
            length = min(len(s["p50"]) for s in stats)
            epochs = np.arange(length)
            for key, style in PERCENTILE_STYLES.items():
                mean = np.mean([s[key][:length] for s in stats], axis=0)
                ax.plot(epochs, mean, style, color="#1f4e99", label=key if r == c == 0 else None)
            fraction = (
                "saturated" if "saturated" in stats[0] else "dead" if "dead" in stats[0] else None
            )
            if fraction:
                twin = ax.twinx()
                mean = np.mean([s[fraction][:length] for s in stats], axis=0)
                twin.plot(epochs, mean, "-", color="#c0392b")
                twin.set_ylim(-0.02, 1.02)
                twin.set_ylabel(fraction, color="#c0392b", fontsize=8)
                twin.tick_params(labelsize=7)
            ax.set_title(f"{variant['name']}: layer {layer}", fontsize=9)
            ax.tick_params(labelsize=7)
            if r == len(rows) - 1:
                ax.set_xlabel("epoch (0: before training)", fontsize=8)
            if c == 0:
                ax.set_ylabel("pre-activation", fontsize=8)
    grid[0][0].legend(fontsize=7)
    return fig


def draw(
    folder: Path,
    definition: Definition,
    variants: list[dict[str, Any]],
    curves: dict[str, list[dict]],
) -> list[Path]:
    """Write the definition's plots into `folder`; returns the paths written.

    - loss.png: training and validation loss per variant (mean and min–max band across
      seeds), against epochs, and against updates and seconds where the plots name them;
    - gap.png, accuracy.png: per variant, seeds as points, the mean as a bar;
    - activations.png: the activation statistics over epochs.
    """
    paths = []
    if "loss" in definition.plots:
        axes = ["epoch"] + [a for a in ("updates", "seconds") if a in definition.plots]
        paths.append(_save(_loss_figure(curves, axes), folder / "loss.png"))
    if "gap" in definition.plots:
        paths.append(_save(_gap_figure(variants), folder / "gap.png"))
    if "accuracy" in definition.plots:
        paths.append(_save(_accuracy_figure(variants), folder / "accuracy.png"))
    if "activations" in definition.plots:
        paths.append(_save(_activations_figure(variants), folder / "activations.png"))
    return paths
