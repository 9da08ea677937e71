"""Pictures of what a run recorded while it trained (`mechanisms.recorder`, issue 21).

`digitlab inspect RUN` draws them into RUN/inspect/ when the run has a mechanisms.json:

- `activation_histograms.png`: per hidden layer, its outputs' histogram after every epoch,
  side by side (fast.ai's "colourful dimension": bins up, epochs across, colour the log of
  the count), with the saturated (sigmoid, tanh) or dead (relu) share on the right axis;
- `training_signals.png`: per layer with weights, the gradient norm and the update/weight
  ratio of the next step over epochs (CS231n's rule of thumb, about 1e-3, drawn as a
  reference line), and the gradient noise scale `B_simple` ± its jackknife SE.

A run trained before the recorder existed, or with `mechanisms=False`, has none; the caller
says so in one line (`NOT_RECORDED`).
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from digitlab.errors import RunError
from digitlab.plots import save_figure
from digitlab.runs import Run
from digitlab.runs.folder import MECHANISMS_FILE, read_mechanisms

HISTOGRAMS_PNG = "activation_histograms.png"
SIGNALS_PNG = "training_signals.png"
UPDATE_RATIO_RULE = 1e-3  # CS231n, "babysitting the learning process": updates ~1e-3 of weights
SHARE_COLOR = "#c0392b"
NOT_RECORDED = (
    "No training record (mechanisms.json): the run was trained before digitlab recorded "
    "one, or with mechanisms=False; train it again to draw activations, gradients, update "
    "ratios and the noise scale over its epochs."
)


def save_recording_pictures(run: Run, out_dir: str | Path) -> list[Path]:
    """Draw the run's training record into `out_dir`; [] when the run has none.

    Raises:
        RunError: mechanisms.json is there but not a recording.
    """
    recording = read_mechanisms(run.path)
    if recording is None:
        return []
    try:
        figures = [
            (HISTOGRAMS_PNG, histograms_figure(recording)),
            (SIGNALS_PNG, signals_figure(recording)),
        ]
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise RunError(
            f"{run.path / MECHANISMS_FILE} is not a training record ({type(exc).__name__}: "
            f"{exc}); train the run again to record it"
        ) from None
    out = Path(out_dir)
    return [save_figure(figure, out / name) for name, figure in figures]


def histograms_figure(recording: dict[str, Any]) -> Figure:
    """The colourful dimension: per layer, log counts of its outputs per bin over epochs."""
    epochs = np.asarray(recording["epochs"], dtype=float)
    layers = recording.get("activations") or {}
    if not layers:
        fig = Figure(figsize=(5, 1.2))
        fig.text(0.5, 0.5, "no hidden layer with a nonlinearity to record", ha="center")
        return fig
    fig = Figure(figsize=(7.5, 2.3 * len(layers) + 0.8), layout="constrained")
    axes = fig.subplots(len(layers), 1, squeeze=False)[:, 0]
    sample = recording.get("sample")
    for ax, (name, layer) in zip(axes, layers.items(), strict=True):
        counts = np.asarray(layer["counts"], dtype=float).T  # bins × epochs
        edges = np.asarray(layer["edges"], dtype=float)
        x_edges = epoch_edges(epochs)
        image = ax.pcolormesh(
            x_edges,
            edges,
            np.where(counts > 0, counts, np.nan),
            norm=LogNorm(vmin=1, vmax=max(counts.max(), 2)),
            cmap="viridis",
        )
        bar = fig.colorbar(image, ax=ax, pad=0.09)
        bar.set_label("count (log)", fontsize=8)
        ax.set_ylabel(f"{layer['activation']} output", fontsize=8)
        ax.set_title(textwrap.fill(_layer_title(name, layer), 90), fontsize=9)
        _share_axis(ax, epochs, layer)
    axes[-1].set_xlabel("epoch (0: before training)")
    fig.suptitle(
        f"Activations per hidden layer over training, on {sample} training digits (dropout "
        "off)\nfast.ai's colourful dimension: each column one epoch's histogram",
        fontsize=10,
    )
    return fig


def epoch_edges(epochs: np.ndarray) -> np.ndarray:
    """Column edges centred on each recorded epoch."""
    if len(epochs) == 1:
        return np.array([epochs[0] - 0.5, epochs[0] + 0.5])
    middle = (epochs[1:] + epochs[:-1]) / 2
    return np.concatenate(
        [[epochs[0] - (middle[0] - epochs[0])], middle, [epochs[-1] + (epochs[-1] - middle[-1])]]
    )


def _layer_title(name: str, layer: dict[str, Any]) -> str:
    parts = [f"{name} ({layer['activation']})"]
    for key, words in (("saturated", "saturated"), ("dead", "dead units")):
        values = [v for v in layer.get(key) or [] if v is not None]
        if values:
            parts.append(f"{words}: {values[0]:.0%} at the start, {values[-1]:.0%} at the end")
    above = [v for v in layer.get("above") or [] if v is not None]
    if above and max(above) > 0:
        parts.append(f"up to {max(above):.1%} above the top bin (counted in it)")
    return "; ".join(parts)


def _share_axis(ax, epochs: np.ndarray, layer: dict[str, Any]) -> None:
    """The saturated or dead share over epochs on a right axis, 0–100%."""
    for key in ("saturated", "dead"):
        values = layer.get(key) or []
        if values and all(v is not None for v in values):
            twin = ax.twinx()
            twin.plot(epochs, np.asarray(values) * 100, "o-", color=SHARE_COLOR, ms=3, lw=1.5)
            twin.set_ylim(-2, 102)
            twin.set_ylabel(f"{key} (%)", color=SHARE_COLOR, fontsize=8)
            twin.tick_params(labelsize=8, colors=SHARE_COLOR)
            return


def signals_figure(recording: dict[str, Any]) -> Figure:
    """Gradient norms and update/weight ratios per layer, and the noise scale, over epochs."""
    epochs = np.asarray(recording["epochs"], dtype=float)
    fig = Figure(figsize=(7.5, 3.6), layout="constrained")
    grad_ax, ratio_ax, noise_ax = fig.subplots(1, 3)
    kinds = recording.get("layers") or {}
    for name, values in (recording.get("gradient_norms") or {}).items():
        label = f"{name} ({kinds[name]})" if name in kinds else name
        grad_ax.plot(epochs, _positive(values), ".-", label=label)
    for name, values in (recording.get("update_ratios") or {}).items():
        ratio_ax.plot(epochs, _positive(values), ".-", label=name)
    ratio_ax.axhline(UPDATE_RATIO_RULE, color="k", ls="--", lw=1)
    ratio_ax.annotate(
        "1e-3: CS231n's rule of thumb",
        (0.98, UPDATE_RATIO_RULE),
        xycoords=("axes fraction", "data"),
        xytext=(0, -3),
        textcoords="offset points",
        ha="right",
        va="top",
        fontsize=7,
    )
    _noise_panel(noise_ax, recording.get("noise_scale") or {})
    batch = recording.get("batch_size")
    titles = (
        (grad_ax, "Gradient norm |∇L| per layer"),
        (ratio_ax, f"Update/weight ratio of a step\n(batch {batch})"),
        (noise_ax, "Gradient noise scale B_simple"),
    )
    for ax, title in titles:
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch (0: before training)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3, which="both")
    grad_ax.set_ylabel("L2 norm over the layer's weights", fontsize=8)
    ratio_ax.set_ylabel("|Δw| / |w|", fontsize=8)
    noise_ax.set_ylabel("digits", fontsize=8)
    handles, labels = grad_ax.get_legend_handles_labels()
    if handles:
        fig.legend(
            handles,
            labels,
            loc="outside lower center",
            ncols=min(len(labels), 5),
            fontsize=8,
            title="layer",
            title_fontsize=8,
        )
    fig.suptitle(
        f"While training, on {recording.get('sample')} training digits (dropout off)",
        fontsize=10,
    )
    return fig


def _positive(values) -> np.ndarray:
    """Values for a log axis: None and values ≤ 0 left out (NaN)."""
    array = np.array([np.nan if v is None else float(v) for v in values])
    return np.where(array > 0, array, np.nan)


def _noise_panel(ax, noise: dict[str, Any]) -> None:
    epochs = np.asarray(noise.get("epochs") or [], dtype=float)
    simple = _positive(noise.get("simple") or [])
    errors = np.array([np.nan if e is None else e for e in noise.get("error") or []], float)
    if not len(epochs) or np.isnan(simple).all():
        ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes)
        return
    low = np.where(np.isfinite(errors), np.minimum(errors, simple * (1 - 1e-3)), 0)
    high = np.where(np.isfinite(errors), errors, 0)
    ax.errorbar(epochs, simple, yerr=[low, high], fmt="o-", color="#8e44ad", capsize=3, ms=4)
    digits = noise.get("digits")
    ax.text(
        0.02,
        0.02,
        f"± jackknife SE; {digits:,} digits" if digits else "± jackknife SE",
        transform=ax.transAxes,
        fontsize=7,
    )
    if math.isfinite(float(np.nanmax(simple))):
        ax.set_ylim(np.nanmin(simple) / 3, np.nanmax(simple + high) * 1.5)
