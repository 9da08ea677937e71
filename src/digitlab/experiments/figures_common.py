"""What every experiment figure shares: intervals over seeds, bands, accuracy axes, colours.

The figures are built like `digitlab.plots`: `Figure` objects directly (no pyplot), saved by
`plots.save_figure`. Sizes are for a page about 700–1,000 px wide: a figure is at most `WIDTH`
inches (100 px each) and no text is smaller than 8 points.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.gridspec import SubplotSpec
from scipy import stats

WIDTH = 7.5  # inches: 750 px at plots.DPI, so a page shows the figure at (almost) full size
LEVEL = 0.95  # the confidence level of every band and whisker of a mean over seeds
# An accuracy axis starts at 0 unless every value lies above this; then it is drawn broken:
# a short panel holding 0 under the zoomed one, with break marks between them.
BREAK_ABOVE = 30.0  # percent
BREAK_GID = "axis-break"  # the gid of the break marks, for tests to find
BREAK_RATIO = 6  # the zoomed panel is this many times as tall as the panel holding 0
BREAK_GAP = 0.04  # between the two, as a share of the zoomed panel's height
BAND_NOTE = f"band: {LEVEL:.0%} confidence interval of the mean over seeds (t)"


def colors(n: int) -> list:
    """`n` colours from matplotlib's tab10 cycle (repeating after 10)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def mean_interval(
    values: Sequence[float] | np.ndarray, level: float = LEVEL
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The mean over seeds (axis 0) and its t-based confidence interval at `level`.

    `values` is one value per seed, or one row per seed. The interval is
    mean ± t(1 − (1 − level)/2, n − 1) · s/√n with s the sample standard deviation; with one
    seed there is none (low and high are None).
    """
    values = np.asarray(values, dtype=float)
    mean = values.mean(axis=0)
    n = len(values)
    if n < 2:
        return mean, None, None
    half = stats.t.ppf(0.5 + level / 2, n - 1) * stats.sem(values, axis=0)
    return mean, mean - half, mean + half


def seed_note(counts: Sequence[int]) -> str:
    """How many seeds the means are over, and what the bands are (none for one seed)."""
    counts = sorted(set(counts))
    seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
    if counts[-1] < 2:
        return f"one seed: no band, no interval ({seeds} run per variant)"
    note = f"mean of {seeds} seeds; {BAND_NOTE}"
    return note + ("; one seed: no band" if counts[0] < 2 else "")


def band(ax: Axes, x, runs: Sequence[Sequence[float]], color, label: str, **style) -> None:
    """The mean across seeds as a line and its confidence interval as a band (one seed: the
    line alone). Runs are cut to the shortest."""
    length = min(len(r) for r in runs)
    values = np.array([list(r)[:length] for r in runs], dtype=float)
    x = np.asarray(x, dtype=float)[:length]
    mean, low, high = mean_interval(values)
    marker = "." if length < 3 else None
    ax.plot(x, mean, color=color, label=label, marker=marker, **style)
    if low is not None:
        ax.fill_between(x, low, high, color=color, alpha=0.18, lw=0)


def accuracy_axes(
    fig: Figure | SubFigure, spec: SubplotSpec, percents: Sequence[float]
) -> tuple[Axes, Axes | None]:
    """Axes for accuracies in percent: full (0–100%), or broken when every value lies above
    `BREAK_ABOVE` (a zoomed panel over a short one holding 0, break marks between them, one
    scale in both). Returns the axes to draw in and the panel holding 0 (None: full axis)."""
    values = np.asarray([v for v in percents if np.isfinite(v)], dtype=float)
    if not len(values) or values.min() <= BREAK_ABOVE:
        ax = fig.add_subplot(spec)
        ax.set_ylim(0, 100)
        return ax, None
    low, high = values.min(), values.max()
    pad = max((high - low) * 0.1, 0.25)
    limits = (max(low - pad, BREAK_ABOVE), min(high + pad, 100.0))
    ax = fig.add_subplot(spec)
    # Below it, inside its layout box (an inset: no padding between the two), one scale.
    zero = ax.inset_axes([0, -BREAK_GAP - 1 / BREAK_RATIO, 1, 1 / BREAK_RATIO], sharex=ax)
    ax.set_ylim(*limits)
    zero.set_ylim(0, (limits[1] - limits[0]) / BREAK_RATIO)  # the zoomed panel's scale
    zero.set_yticks([0])
    ax.spines.bottom.set_visible(False)
    zero.spines.top.set_visible(False)
    ax.tick_params(bottom=False, labelbottom=False)
    marks = {"marker": [(-1, -0.5), (1, 0.5)], "markersize": 10, "linestyle": "none"}
    marks.update(color="k", mec="k", mew=1, clip_on=False, gid=BREAK_GID)
    ax.plot([0, 1], [0, 0], transform=ax.transAxes, **marks)
    zero.plot([0, 1], [1, 1], transform=zero.transAxes, **marks)
    return ax, zero


def finish_accuracy_axes(ax: Axes, zero: Axes | None, xlabel: str, ylabel: str) -> Axes:
    """Label an `accuracy_axes` pair: the x label on the lowest panel, the y label once;
    returns the lowest panel."""
    bottom = zero or ax
    bottom.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    for panel in (ax, zero):
        if panel is not None:
            panel.grid(alpha=0.3)
    return bottom


def wrap(text: str, width: int = 28) -> str:
    """`text` broken into lines of at most `width` characters (long names, labels)."""
    return "\n".join(textwrap.wrap(text, width, break_on_hyphens=False)) or text


def message_figure(text: str) -> Figure:
    """A small figure saying why there is nothing to draw."""
    fig = Figure(figsize=(5, 1.2))
    fig.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    return fig


def seed_points(ax: Axes, position: float, values: Sequence[float], color) -> None:
    """Each seed's value as a small dot, right of the mean's whisker, spread sideways so
    equal values stay visible."""
    if not len(values):
        return
    spread = np.linspace(-0.06, 0.06, len(values)) if len(values) > 1 else np.zeros(1)
    ax.plot(position + 0.2 + spread, values, "o", color=color, ms=3.5, alpha=0.6, mew=0)


def mean_with_whisker(ax: Axes, x: float, values: Sequence[float], color, **style) -> None:
    """The mean of `values` as a marker with its confidence interval as a whisker (none for
    one value)."""
    mean, low, high = mean_interval(values)
    error = None if low is None else [[mean - low], [high - mean]]
    ax.errorbar([x], [mean], yerr=error, fmt="o", color=color, ms=6, capsize=4, lw=1.5, **style)
