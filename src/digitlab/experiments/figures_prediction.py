"""The figure that leads an experiment's report: what the mechanism predicted, and what came.

One figure per mechanism (`experiments.predictions`), its title the verdict:

- noise scale: steps and digits to the target against the batch size (log–log), each batch
  size's measured interval, the trade-off curve anchored on the baseline's measured point
  (`mechanisms.anchor_tradeoff`, shaded for `B_noise ± 2 SE` and the anchor's interval), and
  `B_noise` as a vertical line;
- curvature: each SGD variant's learning-rate grid (trained ○, diverged ×) against the
  predicted largest stable rate; the final training loss per input scaling in the predicted
  order; the predicted and measured saturated share at the start;
- short-run gap: the gap of the short runs without dropout, the full runs' gap, and the
  interaction the claim measured, against 0;
- size gap: the test accuracy with and without dropout per training-set size, the short
  runs' gaps, and dropout's gain per size (`figures_sizes`).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from digitlab.experiments import figures_common as common
from digitlab.experiments.schema import ExperimentRecord

PREDICTED = "#8e44ad"  # the prediction's curve, lines and bars
MEASURED = "#1f4e99"
ADAM = "#e67e22"  # the Adam twins the curvature prediction leaves out
DIVERGED = "#c0392b"
VERDICT_COLORS = {
    "held": "#1e7b34",
    "missed": "#c0392b",
    "inconclusive": "#7f8c8d",
    "pending": "#7f8c8d",
}


def prediction_figure(record: ExperimentRecord) -> Figure:
    """The record's prediction against its measurements (a message figure without one)."""
    prediction = record.prediction
    if prediction is None:
        return common.message_figure("no prediction was made before the runs")
    from digitlab.experiments.figures_sizes import size_figure

    draw = {
        "noise-scale": _noise_scale,
        "curvature": _curvature,
        "short-run-gap": _short_run,
        "size-gap": size_figure,
    }
    fig = draw[prediction.mechanism](record)
    color = VERDICT_COLORS[prediction.verdict]
    fig.suptitle(
        common.wrap(f"Predicted before the runs — {prediction.sentence}", 110),
        fontsize=10,
        color=color,
    )
    return fig


def _noise_scale(record: ExperimentRecord) -> Figure:
    from digitlab.experiments.verdicts import reached

    measured = record.prediction.measured
    fit = int(record.budget.get("fit_samples") or 1)
    anchor = next((v for v in record.variants if v.name == measured.get("variant")), None)
    fig = Figure(figsize=(common.WIDTH, 3.9), layout="constrained")
    steps_ax, digits_ax = fig.subplots(1, 2)
    base = reached(anchor, fit, common.LEVEL) if anchor is not None else None
    if measured.get("noise_scale") and base is not None and math.isfinite(base["high"]):
        _tradeoff(steps_ax, digits_ax, measured, anchor, base, fit)
    for part in record.prediction.parts:
        _measured_point(steps_ax, digits_ax, part.values)
    if base is not None:
        point = {
            "batch": min(anchor.batch_size, fit),
            "measured_low": base["low"],
            "measured_high": base["high"],
            "measured_mean": base["mean"],
        }
        _measured_point(steps_ax, digits_ax, point, anchor=True)
    target = f"{record.target:.0%}" if record.target else "the target"
    for ax, label in ((steps_ax, "updates"), (digits_ax, "digits")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("batch size (log)")
        ax.set_ylabel(f"{label} to the target (log)")
        ax.set_title(f"{label.capitalize()} to {target} validation accuracy", fontsize=10)
        ax.grid(alpha=0.3, which="both")
    _legend(fig, "measured: the mean over seeds and its interval, one epoch wider below")
    return fig


def _tradeoff(steps_ax, digits_ax, measured: dict, anchor, base: dict, fit: int) -> None:
    """The trade-off anchored on the anchor's measured digits (`anchor_tradeoff`), shaded
    over `B_noise ± 2 SE` and the anchor's interval, and `B_noise` as a vertical line."""
    from digitlab.mechanisms.predictions import anchor_tradeoff

    noise, error = measured["noise_scale"], measured.get("standard_error") or 0.0
    b0 = min(anchor.batch_size, fit)
    e0 = float(np.mean(anchor.examples_to_target.values))
    curve = anchor_tradeoff(noise, b0, e0 / b0)
    ends = [
        anchor_tradeoff(max(n, 1e-9), b0, max(e, 1.0) / b0)
        for n in (noise - 2 * error, noise + 2 * error)
        for e in (base["low"], base["high"])
    ]
    sizes = np.geomspace(1, fit, 200)
    for ax, per in ((steps_ax, 1 / sizes), (digits_ax, np.ones_like(sizes))):
        band = np.array([c.examples(sizes) for c in ends]) * per
        ax.fill_between(
            sizes,
            band.min(axis=0),
            band.max(axis=0),
            color=PREDICTED,
            alpha=0.15,
            lw=0,
            label="predicted range (B_noise ± 2 SE, anchor's interval)",
        )
        ax.plot(
            sizes,
            curve.examples(sizes) * per,
            color=PREDICTED,
            label=f"predicted, anchored at batch {b0:g}",
        )
        ax.axvline(
            noise, color=PREDICTED, ls="--", lw=1, label=f"B_noise ≈ {noise:,.0f} (at the start)"
        )


def _measured_point(steps_ax, digits_ax, values: dict, anchor: bool = False) -> None:
    """A batch size's measured interval of digits (and updates = digits / batch) to the
    target: a bar from low to high, an arrow up when only a lower bound is known."""
    low, high, batch = values.get("measured_low"), values.get("measured_high"), values.get("batch")
    if low is None or batch is None:
        return
    color = "k" if anchor else MEASURED
    label = "anchor (measured)" if anchor else "measured"
    for ax, per in ((steps_ax, 1 / batch), (digits_ax, 1.0)):
        bottom = max(low, 1.0) * per
        if high is None or not math.isfinite(high):
            ax.plot([batch], [bottom], "^", color=color, ms=7, label=f"{label}: lower bound")
            continue
        ax.plot([batch, batch], [bottom, high * per], "-", color=color, lw=3, alpha=0.7)
        mean = values.get("measured_mean") or math.sqrt(max(low, 1.0) * high)
        ax.plot([batch], [mean * per], "o", color=color, ms=5, label=label)


def _legend(fig: Figure, note: str, ncols: int = 3) -> None:
    handles: dict = {}
    for axis in fig.axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(
            handles.values(),
            handles.keys(),
            loc="outside lower center",
            ncols=ncols,
            fontsize=8,
            title=note,
            title_fontsize=8,
        )


def _curvature(record: ExperimentRecord) -> Figure:
    measured = record.prediction.measured
    panels = [p for p in ("stable_rates", "conditioning", "saturation") if measured.get(p)]
    fig = Figure(figsize=(common.WIDTH, 4.6), layout="constrained")
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    by_name = {v.name: v for v in record.variants}
    for ax, panel in zip(axes, panels, strict=False):
        if panel == "stable_rates":
            _rates_panel(ax, measured["stable_rates"], by_name)
        elif panel == "conditioning":
            _order_panel(ax, measured["conditioning"], by_name)
        else:
            _saturation_panel(ax, measured["saturation"], record)
    _legend(fig, "", ncols=2)
    return fig


def _rates_panel(ax, rates: dict, by_name: dict) -> None:
    from digitlab.experiments.verdicts import failed

    names = list(rates)
    for row, name in enumerate(names):
        grid = by_name[name].learning_rate_grid if name in by_name else ()
        ok = [p.learning_rate for p in grid if not failed(p)]
        bad = [p.learning_rate for p in grid if failed(p)]
        ax.plot(ok, [row] * len(ok), "o", mfc="none", color=MEASURED, label="grid rate trained")
        ax.plot(
            bad,
            [row] * len(bad),
            "x",
            color=DIVERGED,
            ms=8,
            label="grid rate failed (NaN, or at chance)",
        )
        ax.plot(
            [rates[name]["rate"]],
            [row],
            "|",
            color=PREDICTED,
            ms=18,
            mew=2.5,
            label="predicted limit 2/λ_max",
        )
    ax.set_yticks(range(len(names)), [common.wrap(n, 14) for n in names], fontsize=8)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xscale("log")
    ax.margins(x=0.12)  # the grid's end markers clear of the frame
    ax.set_xlabel("SGD learning rate (log)")
    ax.set_title("Largest stable rate", fontsize=10)
    ax.grid(alpha=0.3, axis="x")


def _adam_twin(by_name: dict, scaling: str):
    """The variant trained by Adam on the same network and inputs (None without one)."""
    for variant in by_name.values():
        spec = variant.spec
        train = spec.get("train") if isinstance(spec.get("train"), dict) else {}
        if (
            spec.get("input_scaling", "unit") == scaling
            and "layers" not in spec
            and train.get("optimizer", "adam") == "adam"
            and variant.final_train_loss.values
        ):
            return variant
    return None


def _order_panel(ax, spreads: dict, by_name: dict) -> None:
    """The SGD variants' final training loss in the predicted order, and beside each its Adam
    twin on the same inputs, which the prediction leaves out: Adam's per-parameter step
    rescales each weight's update, hiding most of the inputs' conditioning."""
    names = sorted(spreads, key=lambda n: spreads[n]["top_to_median"])
    for i, name in enumerate(names):
        values = list(by_name[name].final_train_loss.values) if name in by_name else []
        if values:
            common.mean_with_whisker(ax, i, values, MEASURED, label="final training loss (SGD)")
        twin = _adam_twin(by_name, spreads[name]["scaling"])
        if twin is not None:
            common.mean_with_whisker(
                ax, i + 0.25, list(twin.final_train_loss.values), ADAM, mfc="white",
                label="Adam, same inputs (not predicted)",
            )  # fmt: skip
    labels = [f"{common.wrap(n, 12)}\n{spreads[n]['top_to_median']:,.0f}" for n in names]
    ax.set_xticks(range(len(names)), labels, fontsize=7)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylabel("training loss at the end (dropout off)", fontsize=8)
    ax.set_xlabel("variant and its inputs' spread (λ_max / median)", fontsize=8)
    ax.set_title("Predicted order: best conditioned first", fontsize=10)
    ax.grid(alpha=0.3, axis="y")


def _saturation_panel(ax, saturation: dict, record: ExperimentRecord) -> None:
    names = list(saturation)
    parts = {p.name: p for p in record.prediction.parts}
    for i, name in enumerate(names):
        ax.bar(
            i - 0.2,
            saturation[name]["predicted"] * 100,
            0.4,
            color=PREDICTED,
            alpha=0.7,
            label="predicted (Gaussian)",
        )
        found = parts.get(name)
        value = found.values.get("share") if found is not None else None
        if value is not None:
            ax.bar(
                i + 0.2,
                value * 100,
                0.4,
                color=MEASURED,
                alpha=0.7,
                label="measured at epoch 0 (mean over seeds)",
            )
    ax.set_xticks(range(len(names)), [common.wrap(n, 12) for n in names], fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("saturated share, first sigmoid layer (%)", fontsize=8)
    ax.set_title("Saturation at the start", fontsize=10)
    ax.grid(alpha=0.3, axis="y")


def _short_run(record: ExperimentRecord) -> Figure:
    measured = record.prediction.measured
    gaps = measured.get("gaps", {})
    by_name = {v.name: v for v in record.variants}
    fig = Figure(figsize=(common.WIDTH, 3.6), layout="constrained")
    short, full, effect = fig.subplots(1, 3)
    names = list(gaps)
    short.bar(range(len(names)), [gaps[n] for n in names], color=PREDICTED, alpha=0.7)
    short.set_title(f"Gap after {measured.get('epochs')} epochs (before)", fontsize=10)
    for i, name in enumerate(names):
        values = list(by_name[name].generalization_gap.values) if name in by_name else []
        if values:
            common.mean_with_whisker(full, i, values, MEASURED)
    full.set_title("Gap after the full runs", fontsize=10)
    for ax in (short, full):
        ax.set_xticks(range(len(names)), [common.wrap(n, 12) for n in names], fontsize=8)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set_ylabel("validation − training loss", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    claim = next((c for c in record.claims if c.name == measured.get("claim")), None)
    effect.axhline(0, color="k", lw=0.8)
    if claim is not None and claim.estimate is not None:
        low = claim.low if claim.low is not None else claim.estimate
        high = claim.high if claim.high is not None else claim.estimate
        effect.errorbar(
            [0],
            [claim.estimate * 100],
            yerr=[[(claim.estimate - low) * 100], [(high - claim.estimate) * 100]],
            fmt="o",
            color=MEASURED,
            capsize=4,
        )
    sign = "> 0" if measured.get("sign", 1) > 0 else "< 0"
    effect.set_xticks([0], [f"claim '{measured.get('claim')}'\npredicted {sign}"], fontsize=8)
    effect.set_xlim(-1, 1)
    effect.set_ylabel("interaction, test accuracy (points)", fontsize=8)
    effect.set_title("Dropout's extra gain", fontsize=10)
    effect.grid(alpha=0.3, axis="y")
    return fig
