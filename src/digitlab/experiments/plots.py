"""An experiment's figures, as PNG: curves over seeds, differences, steps to a target.

`draw` writes the figures a definition's `plots` names. Curves are means over seeds with a
t-based 95% confidence band (`figures_common`); training curves are measured with dropout off
wherever the runs recorded it. The `_*_figure` helpers return the figure, for tests to read
back its axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from digitlab.experiments import figures_common as common
from digitlab.experiments import figures_mechanisms
from digitlab.experiments.figures_forest import forest_figure, listed_tests
from digitlab.experiments.figures_summary import (
    gap_figure,
    learning_rates_figure,
    sharpness_figure,
    test_accuracy_figure,
    to_target_figure,
)
from digitlab.experiments.schema import Definition
from digitlab.plots import save_figure

CLOCKS = {"epoch": "epochs", "updates": "weight updates", "seconds": "training seconds"}
# The pre-activation percentiles drawn per layer, each its own line style.
PERCENTILE_STYLES = {"p15": ":", "p50": "-", "p85": "--"}
PERCENTILE_NAMES = {"p15": "15th percentile", "p50": "median", "p85": "85th percentile"}
FRACTION_COLOR = "#c0392b"
TRAINING, VALIDATION = "#1f77b4", "#d62728"


def training_curves(runs: list[dict], kind: str) -> tuple[list[list[float]], str]:
    """Each run's training `kind` ("loss" or "accuracy") per epoch, and its legend label:
    measured with dropout off (`inference_*`) when every run recorded it, else Keras's
    running figure of the epoch, with dropout on."""
    key = f"inference_{kind}"
    if all(c.get(key) for c in runs):
        return [c[key] for c in runs], "training (dropout off)"
    return [c.get(kind) or [] for c in runs], "training (Keras's, dropout on)"


def _epochs(curve: dict) -> int:
    return len(curve.get("val_loss") or curve.get("loss") or [])


def _x(curve: dict, clock: str) -> np.ndarray:
    """Where each epoch ends on a clock: its number, the updates so far, the seconds so far."""
    epochs = _epochs(curve)
    if clock == "updates":
        return np.arange(1, epochs + 1) * curve["updates_per_epoch"]
    if clock == "seconds":
        return np.cumsum(curve["epoch_seconds"][:epochs])
    return np.arange(1, epochs + 1, dtype=float)


def _shown(curves: dict[str, list[dict]]) -> dict[str, list[dict]]:
    return {name: runs for name, runs in curves.items() if runs and _epochs(runs[0])}


def _panels(fig: Figure, count: int):
    """A grid of `count` panels, at most 3 a row, and its number of columns."""
    cols = min(count, 3) or 1
    return fig.add_gridspec(math.ceil(count / cols) or 1, cols), cols


def _figure_legend(fig: Figure, ncols: int = 3) -> None:
    """One legend under the panels, each label once."""
    handles: dict[str, Any] = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=ncols)


def _panel_title(ax, name: str, seeds: int) -> None:
    ax.set_title(common.wrap(f"{name} ({seeds} seed{'s' * (seeds > 1)})", 34), fontsize=10)


def _loss_top(curves: dict[str, list[dict]]) -> float:
    """A y limit that keeps the curves readable: the first epochs' spikes are cut off."""
    values = [x for runs in curves.values() for c in runs
              for k in ("loss", "inference_loss", "val_loss")
              for x in c.get(k) or [] if np.isfinite(x)]  # fmt: skip
    return float(np.percentile(values, 95)) * 1.15 if values else 1.0


def _loss_figure(curves: dict[str, list[dict]]) -> Figure:
    """One panel per variant: training and validation loss per epoch, on a shared scale."""
    shown = _shown(curves)
    fig = Figure(
        figsize=(common.WIDTH, 2.5 * math.ceil(len(shown) / 3) + 1.2), layout="constrained"
    )
    grid, cols = _panels(fig, len(shown))
    top, first = _loss_top(shown), None
    for i, (name, runs) in enumerate(shown.items()):
        ax = fig.add_subplot(grid[i // cols, i % cols], sharey=first)
        first = first or ax
        x = np.arange(1, min(_epochs(c) for c in runs) + 1)
        train, label = training_curves(runs, "loss")
        if all(train):
            common.band(ax, x, train, TRAINING, label)
        if all(c.get("val_loss") for c in runs):
            common.band(ax, x, [c["val_loss"] for c in runs], VALIDATION, "validation", ls="--")
        _panel_title(ax, name, len(runs))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss (cross-entropy)" if i % cols == 0 else "")
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
    fig.suptitle("Training and validation loss per epoch\n" + _note(shown), fontsize=10)
    _figure_legend(fig)
    return fig


def _note(curves: dict[str, list[dict]]) -> str:
    return common.seed_note([len(runs) for runs in curves.values()])


def _clocks_figure(curves: dict[str, list[dict]], clocks: Sequence[str]) -> Figure:
    """Validation loss against each clock (epochs, weight updates, seconds), the variants
    overlaid: what a batch size buys per epoch, per update and per second."""
    shown = _shown(curves)
    fig = Figure(figsize=(common.WIDTH, 3.6), layout="constrained")
    panels = fig.subplots(1, len(clocks), squeeze=False, sharey=True).ravel()
    top = _loss_top({n: [{"val_loss": c.get("val_loss")} for c in r] for n, r in shown.items()})
    for ax, clock in zip(panels, clocks, strict=True):
        for color, (name, runs) in zip(common.colors(len(shown)), shown.items(), strict=True):
            if not all(c.get("val_loss") for c in runs):
                continue
            length = min(_epochs(c) for c in runs)
            x = np.mean([_x(c, clock)[:length] for c in runs], axis=0)
            common.band(ax, x, [c["val_loss"] for c in runs], color, name)
        if clock != "epoch":
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, top)
        ax.set_xlabel(CLOCKS[clock] + (" (log)" if clock != "epoch" else ""))
        ax.set_title(f"per {CLOCKS[clock].removesuffix('s')}", fontsize=10)
        ax.grid(alpha=0.3)
    panels[0].set_ylabel("validation loss (cross-entropy)")
    named = [CLOCKS[c] for c in clocks]
    clocks_text = ", ".join(named[:-1]) + " and " + named[-1]
    fig.suptitle(f"Validation loss against {clocks_text}\n" + _note(shown), fontsize=10)
    _figure_legend(fig, ncols=min(len(shown), 5))
    return fig


def _accuracy_curves_figure(curves: dict[str, list[dict]]) -> Figure:
    """One panel per variant: training (dropout off) and validation accuracy per epoch, on
    one scale: 0–100%, or visibly broken when every value is far above 0."""
    shown = _shown(curves)
    drawn: dict[str, list] = {}
    for name, runs in shown.items():
        train, label = training_curves(runs, "accuracy")
        pairs = [(train, label, TRAINING, "-")] if all(train) else []
        if all(c.get("val_accuracy") for c in runs):
            pairs.append(([c["val_accuracy"] for c in runs], "validation", VALIDATION, "--"))
        drawn[name] = [([np.asarray(r, float) * 100 for r in values], *rest)
                       for values, *rest in pairs]  # fmt: skip
    percents = []
    for pairs in drawn.values():
        for values, *_ in pairs:
            length = min(len(r) for r in values)
            mean, low, high = common.mean_interval([r[:length] for r in values])
            percents += [
                *mean,
                *(low if low is not None else []),
                *(high if high is not None else []),
            ]
    fig = Figure(
        figsize=(common.WIDTH, 2.7 * math.ceil(len(shown) / 3) + 1.2), layout="constrained"
    )
    grid, cols = _panels(fig, len(shown))
    for i, (name, pairs) in enumerate(drawn.items()):
        ax, zero = common.accuracy_axes(fig, grid[i // cols, i % cols], percents)
        for values, label, color, style in pairs:
            length = min(len(r) for r in values)
            common.band(ax, np.arange(1, length + 1), values, color, label, ls=style)
        runs = shown[name]
        _panel_title(ax, name, len(runs))
        bottom = common.finish_accuracy_axes(
            ax, zero, "epoch", "accuracy (%)" if i % cols == 0 else ""
        )
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("Training and validation accuracy per epoch\n" + _note(shown), fontsize=10)
    _figure_legend(fig)
    return fig


def _activations_figure(variants: list[dict[str, Any]]) -> Figure:
    """Per variant (rows) and hidden layer (columns): pre-activation percentiles over epochs
    (left axis) and the saturated or dead fraction (right axis, red), mean over seeds."""
    rows = [v for v in variants if v.get("activations")]
    layers = max((len(next(iter(v["activations"].values()))) for v in rows), default=0)
    if not rows or not layers:
        return common.message_figure("no activation statistics")
    fig = Figure(figsize=(common.WIDTH, 2.1 * len(rows) + 1.0), layout="constrained")
    grid = fig.subplots(len(rows), layers, squeeze=False)
    fractions = set()
    for r, variant in enumerate(rows):
        runs = list(variant["activations"].values())
        names = list(runs[0])
        for c in range(layers):
            ax = grid[r][c]
            if c >= len(names):
                ax.set_axis_off()
                continue
            stats = [run[names[c]] for run in runs if names[c] in run]
            length = min(len(s["p50"]) for s in stats)
            epochs = np.arange(length)
            for key, style in PERCENTILE_STYLES.items():
                mean = np.mean([s[key][:length] for s in stats], axis=0)
                ax.plot(epochs, mean, style, color="#1f4e99")
            fraction = next((k for k in ("saturated", "dead") if k in stats[0]), None)
            if fraction:
                fractions.add(fraction)
                twin = ax.twinx()
                twin.plot(epochs, np.mean([s[fraction][:length] for s in stats], axis=0),
                          "-", color=FRACTION_COLOR)  # fmt: skip
                twin.set_ylim(-0.02, 1.02)
                twin.set_ylabel(f"{fraction} fraction", color=FRACTION_COLOR, fontsize=8)
                twin.tick_params(labelsize=8)
            number, _, activation = names[c].partition(" ")
            ax.set_title(f"{variant['name']}: layer {number} ({activation})", fontsize=9)
            ax.tick_params(labelsize=8)
            ax.set_xlabel("epoch (0: before training)" if r == len(rows) - 1 else "", fontsize=8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("pre-activation" if c == 0 else "", fontsize=8)
    handles = [Line2D([], [], ls=s, color="#1f4e99", label=f"pre-activation {PERCENTILE_NAMES[k]}")
               for k, s in PERCENTILE_STYLES.items()]  # fmt: skip
    handles += [Line2D([], [], color=FRACTION_COLOR, label=f"{f} fraction (right axis)")
                for f in sorted(fractions)]  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle("Hidden layers on a fixed validation batch (mean over seeds)", fontsize=10)
    return fig


def draw(
    folder: Path,
    definition: Definition,
    variants: list[dict[str, Any]],
    curves: dict[str, list[dict]],
    tests: Any = (),
    *,
    target: float | None = None,
    recorded: dict[str, dict[str, Any]] | None = None,
) -> list[Path]:
    """Write the definition's figures into `folder`; returns the paths written.

    Args:
        folder: the experiment's folder.
        definition: what was run; its `plots` names the figures.
        variants: `VariantResult`-shaped dicts (`results.variant_results`).
        curves: per variant, per finished run, its per-epoch history (`results.curves_of`).
        tests: the tested differences for the forest plot: `ClaimResult`/`Test`-shaped dicts
            (or models), claims first, or an object with `claims` and `tests` (a judgement).
            Empty: no forest plot.
        target: the validation accuracy the to-target figure counts to (default: the
            definition's).
        recorded: per variant, what its run recorded while training (`results.recordings`).

    The files, by plot: "loss" loss.png; "updates"/"seconds" clocks.png (validation loss
    against epochs and those clocks); "accuracy" accuracy.png (curves) and
    test_accuracy.png; "gap" gap.png; "sharpness" sharpness.png; "activations"
    activations.png; "to-target" to_target.png; "learning-rates" learning_rates.png (if a
    variant tuned its rate); "forest" forest.png (if there are tests). Whatever the plots,
    mechanisms.png and activation_histograms.png when `recorded` holds a recording
    (`figures_mechanisms`).
    """
    plots = definition.plots
    shown = _shown(curves)
    figures: list[tuple[str, Any]] = []
    if "loss" in plots and shown:
        figures.append(("loss.png", lambda: _loss_figure(shown)))
    clocks = ["epoch"] + [c for c in ("updates", "seconds") if c in plots]
    if len(clocks) > 1 and shown:
        figures.append(("clocks.png", lambda: _clocks_figure(shown, clocks)))
    if "accuracy" in plots:
        if shown:
            figures.append(("accuracy.png", lambda: _accuracy_curves_figure(shown)))
        figures.append(("test_accuracy.png", lambda: test_accuracy_figure(variants)))
    by_variant = {  # figures of the variants' summaries alone
        "gap": ("gap.png", lambda: gap_figure(variants)),
        "sharpness": ("sharpness.png", lambda: sharpness_figure(variants, definition.matched_loss)),
        "activations": ("activations.png", lambda: _activations_figure(variants)),
    }
    figures += [figure for plot, figure in by_variant.items() if plot in plots]
    if "to-target" in plots:
        goal = target if target is not None else definition.target
        figures.append(("to_target.png", lambda: to_target_figure(variants, curves, goal)))
    if "learning-rates" in plots and any(v.get("learning_rate_grid") for v in variants):
        figures.append(("learning_rates.png", lambda: learning_rates_figure(variants)))
    listed = listed_tests(tests)
    if "forest" in plots and listed:
        figures.append(("forest.png", lambda: forest_figure(listed)))
    drawn = [save_figure(make(), folder / name) for name, make in figures]
    return drawn + figures_mechanisms.draw(folder, recorded or {})
