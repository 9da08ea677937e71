"""An experiment's view inside its networks (issue 21, §4): what each variant's
`plan.RECORDED_SEED` run recorded while it trained (`mechanisms.recorder`; found by
`results.recordings`), side by side.

- `mechanisms.png`: over epochs, one line per variant, the first layer's gradient norm and
  update/weight ratio (CS231n's 1e-3 drawn), the first hidden layer's saturated share (a
  bounded activation) or dead share (a relu), and the gradient noise scale B_simple ± its SE;
- `activation_histograms.png`: per variant, the first hidden layer's activation histograms
  over epochs (fast.ai's "colourful dimension").

`digitlab inspect RUN` draws every layer of one run (RUN/inspect/).
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from digitlab.insight.recording import UPDATE_RATIO_RULE, epoch_edges
from digitlab.plots import save_figure


def draw(folder: Path, recorded: dict[str, dict[str, Any]]) -> list[Path]:
    """Write `mechanisms.png` and `activation_histograms.png` into `folder` from `recorded`
    (per variant, its run's mechanisms.json); none without a recording. A damaged record
    costs its picture, never the experiment."""
    figures = {"mechanisms.png": mechanisms_figure, "activation_histograms.png": histograms_figure}
    drawn = []
    for name, make in figures.items() if recorded else ():
        with contextlib.suppress(TypeError, ValueError, KeyError, AttributeError):
            drawn.append(save_figure(make(recorded), Path(folder) / name))
    return drawn


def _first(series: dict[str, list] | None) -> list | None:
    return next(iter(series.values()), None) if series else None


def _line(values, epochs) -> tuple[np.ndarray, np.ndarray]:
    array = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    return np.asarray(epochs[: len(array)], dtype=float), array


def mechanisms_figure(recorded: dict[str, dict[str, Any]]) -> Figure:
    """Four panels over epochs, one line per variant (the module's docstring says which)."""
    fig = Figure(figsize=(11, 3.9), layout="constrained")
    grad_ax, ratio_ax, share_ax, noise_ax = fig.subplots(1, 4)
    palette = colormaps["tab10" if len(recorded) <= 10 else "tab20"]  # a colour each
    for index, (variant, recording) in enumerate(recorded.items()):
        colour = palette(index % palette.N)
        epochs = recording["epochs"]
        for ax, key in ((grad_ax, "gradient_norms"), (ratio_ax, "update_ratios")):
            values = _first(recording.get(key))
            if values:
                x, y = _line(values, epochs)
                ax.plot(x, np.where(y > 0, y, np.nan), ".-", color=colour, label=variant)
        layer = _first(recording.get("activations"))
        for key, style in (("saturated", "-"), ("dead", "--")):
            values = (layer or {}).get(key) or []
            if values and any(v is not None for v in values):
                x, y = _line(values, epochs)
                share_ax.plot(x, 100 * y, style, marker=".", color=colour)
        noise = recording.get("noise_scale") or {}
        x, y = _line(noise.get("simple") or [], noise.get("epochs") or [])
        if np.isfinite(y).any():
            _, error = _line(noise.get("error") or [None] * len(y), noise.get("epochs") or [])
            noise_ax.errorbar(x, y, yerr=np.nan_to_num(error[: len(y)]), fmt=".-", color=colour)
    ratio_ax.axhline(UPDATE_RATIO_RULE, color="k", ls=":", lw=1)
    ratio_ax.annotate("1e-3 (CS231n)", (0.02, UPDATE_RATIO_RULE), xycoords=("axes fraction",
                      "data"), xytext=(0, 3), textcoords="offset points", fontsize=7)  # fmt: skip
    panels = (
        (grad_ax, "Gradient norm |∇L|, first layer", "L2 norm", True),
        (ratio_ax, "Update/weight ratio of a step,\nfirst layer", "|Δw| / |w|", True),
        (share_ax, "First hidden layer: saturated outputs (—)\nor dead units (- -)", "%", False),
        (noise_ax, "Gradient noise scale B_simple\n(± SE)", "digits", True),
    )  # fmt: skip
    for ax, title, ylabel, log in panels:
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch (0: before training)", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3, which="both")
        if log and any(line.get_ydata().size for line in ax.get_lines()):
            ax.set_yscale("log")
    share_ax.set_ylim(-2, 102)
    handles, labels = grad_ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6),
                   fontsize=8, title="variant (its seed-0 run)", title_fontsize=8)  # fmt: skip
    return fig


def histograms_figure(recorded: dict[str, dict[str, Any]]) -> Figure:
    """Per variant, its first hidden layer's histogram of outputs per epoch (log counts)."""
    cols = min(len(recorded), 4)
    rows = math.ceil(len(recorded) / cols)
    fig = Figure(figsize=(3.2 * cols + 0.6, 2.5 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(recorded) :]:
        ax.set_axis_off()
    image = None
    for ax, (variant, recording) in zip(axes, recorded.items(), strict=False):
        layer = _first(recording.get("activations"))
        if layer is None or not layer.get("counts"):
            ax.set_title(f"{variant}: no hidden layer recorded", fontsize=8)
            ax.set_axis_off()
            continue
        epochs = np.asarray(recording["epochs"], dtype=float)[: len(layer["counts"])]
        counts = np.asarray(layer["counts"], dtype=float).T  # bins × epochs
        image = ax.pcolormesh(
            epoch_edges(epochs), np.asarray(layer["edges"], dtype=float),
            np.where(counts > 0, counts, np.nan), norm=LogNorm(vmin=1, vmax=max(counts.max(), 2)),
            cmap="viridis",
        )  # fmt: skip
        ax.set_title(f"{variant}: layer 1 ({layer['activation']})", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("output", fontsize=8)
        ax.tick_params(labelsize=7)
    if image is not None:
        bar = fig.colorbar(image, ax=axes.tolist(), shrink=0.8)
        bar.set_label("count (log)", fontsize=8)
    fig.suptitle("First hidden layer's outputs over training: each column one epoch's "
                 "histogram", fontsize=10)  # fmt: skip
    return fig
