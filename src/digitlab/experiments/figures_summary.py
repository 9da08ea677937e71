"""Figures of one number per variant: test accuracy and gap with intervals, steps and examples
to a target against batch size, and the learning-rate grids.

Each takes `VariantResult`-shaped dicts (`results.variant_results`) and returns a `Figure`.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullLocator

from digitlab.experiments import figures_common as common

POINT = "#1f4e99"
SEED = "#7f8c8d"
CENSORED_GID = "censored"
CHOSEN_GID = "chosen-rate"  # the open markers of variants that never reached the target
CENSORED = "#c0392b"
CENSORED_NOTE = (
    "k/n ↑: k of n seeds never reached the target within their budget; drawn at the budget "
    "(their true value is higher), the filled mean is of the seeds that did"
)


def _values(variant: dict[str, Any], key: str, scale: float = 1.0) -> np.ndarray:
    summary = variant.get(key) or {}
    return np.asarray(summary.get("values") or [], dtype=float) * scale


def _names_axis(ax, variants: list[dict[str, Any]]) -> None:
    ax.set_xticks(range(len(variants)), [common.wrap(v["name"], 16) for v in variants])
    ax.set_xlim(-0.6, len(variants) - 0.4)
    ax.set_xlabel("variant")


def _per_variant_width(variants: list[dict[str, Any]]) -> float:
    return min(common.WIDTH, max(4.5, 1.1 * len(variants) + 2))


def _legend(fig: Figure) -> None:
    """Under the axes, where it hides no whisker."""
    handles = [
        Line2D(
            [], [], marker="o", color=POINT, label=f"mean over seeds, {common.LEVEL:.0%} CI (t)"
        ),
        Line2D([], [], marker="o", color=SEED, ls="none", ms=4, alpha=0.6, label="one seed"),
    ]
    fig.legend(handles=handles, fontsize=8, loc="outside lower center", ncols=2)


def test_accuracy_figure(variants: list[dict[str, Any]]) -> Figure:
    """Each variant's test accuracy: the mean over seeds with its 95% t interval, and each
    seed, on a full 0–100% axis or a visibly broken one."""
    fig = Figure(figsize=(_per_variant_width(variants), 4.2), layout="constrained")
    values = [_values(v, "test_accuracy", 100) for v in variants]
    extent = [x for vals in values if len(vals) for x in vals]
    extent += [x for vals in values if len(vals) > 1 for x in common.mean_interval(vals)[1:]]
    ax, zero = common.accuracy_axes(fig, fig.add_gridspec(1, 1)[0], extent)
    for i, vals in enumerate(values):
        common.seed_points(ax, i, vals, SEED)
        if len(vals):
            common.mean_with_whisker(ax, i, vals, POINT)
    _names_axis(zero or ax, variants)
    common.finish_accuracy_axes(ax, zero, "variant", "test accuracy (%)")
    counts = sorted({len(v) for v in values})
    ax.set_title(
        "Test accuracy per variant\n"
        + (
            "one seed: no interval"
            if counts[-1] < 2
            else f"mean and {common.LEVEL:.0%} confidence interval over seeds (t); dots: seeds"
        ),
        fontsize=10,
    )
    _legend(fig)
    return fig


def gap_figure(variants: list[dict[str, Any]]) -> Figure:
    """Each variant's generalisation gap (validation − training loss, dropout off, at the
    end): the mean with its 95% t interval, and each seed."""
    fig = Figure(figsize=(_per_variant_width(variants), 4.0), layout="constrained")
    ax = fig.add_subplot()
    for i, variant in enumerate(variants):
        vals = _values(variant, "generalization_gap")
        common.seed_points(ax, i, vals, SEED)
        if len(vals):
            common.mean_with_whisker(ax, i, vals, POINT)
    ax.axhline(0, color="black", lw=0.8)
    _names_axis(ax, variants)
    ax.set_ylabel("validation − training loss\n(cross-entropy, dropout off, last epoch)")
    ax.set_title(
        "Generalisation gap per variant\n"
        f"mean and {common.LEVEL:.0%} confidence interval over seeds (t); dots: seeds",
        fontsize=10,
    )
    ax.grid(axis="y", alpha=0.3)
    _legend(fig)
    return fig


def sharpness_figure(variants: list[dict[str, Any]], matched_loss: float | None) -> Figure:
    """Keskar et al. 2017's comparison at equal training loss: each variant's sharpness (λ_max
    of the training loss's Hessian) beside its generalisation gap, both read where its
    training loss (dropout off) first fell to `matched_loss`; mean, 95% t interval, seeds."""
    fig = Figure(figsize=(max(common.WIDTH, 2 * _per_variant_width(variants)), 4.0),
                 layout="constrained")  # fmt: skip
    sharp, gap = fig.subplots(1, 2)
    for ax, key in ((sharp, "sharpness_at_matched_loss"), (gap, "gap_at_matched_loss")):
        for i, variant in enumerate(variants):
            vals = _values(variant, key)
            common.seed_points(ax, i, vals, SEED)
            if len(vals):
                common.mean_with_whisker(ax, i, vals, POINT)
        _names_axis(ax, variants)
        ax.grid(axis="y", alpha=0.3)
    at = f"at training loss {matched_loss:g}" if matched_loss is not None else ""
    sharp.set_ylabel("λ_max of the training loss's Hessian")
    sharp.set_title(f"Sharpness {at}", fontsize=10)
    gap.axhline(0, color="black", lw=0.8)
    gap.set_ylabel("validation − training loss (dropout off)")
    gap.set_title(f"Generalisation gap {at}", fontsize=10)
    fig.suptitle(
        f"mean and {common.LEVEL:.0%} confidence interval over seeds (t); dots: seeds; a "
        "variant that never reached the loss has none",
        fontsize=9,
    )
    _legend(fig)
    return fig


def _budget_examples(variant: dict[str, Any], runs: list[dict]) -> float:
    """The training examples one run of the variant saw: its epochs × the digits per epoch
    (from its curves), else its updates × its batch size."""
    if runs and runs[0].get("examples_per_epoch"):
        epochs = variant.get("epochs") or len(runs[0].get("val_loss") or [])
        return float(runs[0]["examples_per_epoch"]) * epochs
    return float(variant["updates"] * variant["batch_size"])


def _crowded(variants: list[dict[str, Any]]) -> set[int]:
    """The batch sizes less than ×1.6 above the one before (every other of a run of such):
    their tick label and note drop a line, so neighbours don't overlap on a log axis."""
    batches = sorted({int(v["batch_size"]) for v in variants})
    crowded: set[int] = set()
    for before, batch in itertools.pairwise(batches):
        if batch < 1.6 * before and before not in crowded:
            crowded.add(batch)
    return crowded


def _batch_ticks(ax, variants: list[dict[str, Any]]) -> None:
    """The batch sizes run, as x ticks; a full batch says so."""
    full = {int(v["batch_size"]) for v in variants if (v.get("spec") or {}).get("full_batch")}
    crowded = _crowded(variants)
    batches = sorted({int(v["batch_size"]) for v in variants})
    labels = ["\n" * (b in crowded) + f"{b:,}" + (" (full)" if b in full else "") for b in batches]
    ax.set_xticks(batches, labels)
    ax.xaxis.set_minor_locator(NullLocator())


def _to_target_panel(ax, variants, curves, key: str) -> list[tuple[float, float]]:
    """One clock (updates or examples) to the target against batch size; returns the
    (batch, mean) points of the variants where a mean is known."""
    means: list[tuple[float, float]] = []
    crowded = _crowded(variants)
    for variant in sorted(variants, key=lambda v: v["batch_size"]):
        batch = float(variant["batch_size"])
        vals = _values(variant, key)
        ax.plot([batch] * len(vals), vals, "o", color=SEED, ms=3.5, alpha=0.55, mew=0)
        if len(vals):
            mean, low, high = common.mean_interval(vals)
            low = max(low, mean * 1e-3) if low is not None else None  # a log axis has no ≤ 0
            error = None if low is None else [[mean - low], [high - mean]]
            ax.errorbar([batch], [mean], yerr=error, fmt="o", color=POINT, ms=6, capsize=4)
            means.append((batch, float(mean)))
        missing = int((variant.get(key) or {}).get("missing", 0))
        if missing:
            runs = curves.get(variant["name"]) or []
            budget = float(variant["updates"]) if key == "updates_to_target" else (
                _budget_examples(variant, runs))  # fmt: skip
            ax.plot([batch], [budget], "o", mfc="white", mec=CENSORED, mew=1.5, ms=8,
                    gid=CENSORED_GID)  # fmt: skip
            rise = 36 if batch in crowded else 22
            arrow = {"arrowstyle": "<-", "color": CENSORED}
            ax.annotate(f"{missing}/{missing + len(vals)}", (batch, budget), (0, rise),
                        textcoords="offset points", ha="center", va="bottom", fontsize=8,
                        color=CENSORED, arrowprops=arrow)  # fmt: skip
    if means:
        ax.plot(*zip(*means, strict=True), "-", color=POINT, lw=1, alpha=0.6)
    ax.set_xscale("log")
    _batch_ticks(ax, variants)
    ax.set_yscale("log")
    ax.margins(y=0.3)  # room above for the notes of runs that never reached it
    ax.set_xlabel("batch size (digits per update, log)")
    ax.grid(alpha=0.3, which="both")
    return means


def to_target_figure(
    variants: list[dict[str, Any]], curves: dict[str, list[dict]], target: float | None
) -> Figure:
    """Steps (weight updates) and examples to the target validation accuracy against batch
    size, log–log, as in Shallue et al. 2019, Fig. 1: the mean over seeds with its 95% t
    interval, seeds as dots, runs that never reached it as open markers at their budget, and
    perfect scaling (steps ∝ 1/B, examples constant) through the smallest batch."""
    fig = Figure(figsize=(common.WIDTH, 4.4), layout="constrained")
    steps_ax, examples_ax = fig.subplots(1, 2)
    goal = f"{target:.0%} validation accuracy" if target is not None else "the target"
    steps = _to_target_panel(steps_ax, variants, curves, "updates_to_target")
    examples = _to_target_panel(examples_ax, variants, curves, "examples_to_target")
    batches = sorted({float(v["batch_size"]) for v in variants})
    ideal = {"color": "black", "ls": ":", "lw": 1.2}
    if steps:
        b0, s0 = steps[0]
        xs = np.array([b for b in batches if b0 <= b <= b0 * s0])  # a run takes ≥ 1 step
        steps_ax.plot(xs, s0 * b0 / xs, label="perfect scaling: steps ∝ 1/B", **ideal)
    if examples:
        b0, e0 = examples[0]
        xs = np.array([b for b in batches if b0 <= b <= e0])
        examples_ax.plot(xs, np.full(len(xs), e0), label="perfect scaling", **ideal)
    steps_ax.set_ylabel("weight updates to the target (log)")
    examples_ax.set_ylabel("training examples to the target (log)")
    steps_ax.set_title(f"Steps to {goal}", fontsize=10)
    examples_ax.set_title(f"Examples to {goal}", fontsize=10)
    handles = [
        Line2D(
            [], [], marker="o", color=POINT, label=f"mean over seeds, {common.LEVEL:.0%} CI (t)"
        ),
        Line2D([], [], marker="o", color=SEED, ls="none", ms=4, label="one seed"),
        Line2D([], [], label="perfect scaling through the smallest batch (steps ∝ 1/B)", **ideal),
    ]
    if any((v.get(k) or {}).get("missing") for v in variants
           for k in ("updates_to_target", "examples_to_target")):  # fmt: skip
        handles.append(Line2D([], [], marker="o", mfc="white", mec=CENSORED, mew=1.5, ls="none",
                              label=common.wrap(CENSORED_NOTE, 80)))  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncols=1, fontsize=8)
    return fig


def learning_rates_figure(variants: list[dict[str, Any]]) -> Figure:
    """Each tuned variant's final validation accuracy at every rate of its grid (one tuning
    run per rate), the chosen rate ringed, diverged rates crossed at 0."""
    tuned = [v for v in variants if v.get("learning_rate_grid")]
    fig = Figure(figsize=(common.WIDTH, 4.4), layout="constrained")
    percents = [100 * p["val_accuracy"] for v in tuned for p in v["learning_rate_grid"]
                if p.get("val_accuracy") is not None and not p.get("diverged")]  # fmt: skip
    diverged_any = any(p.get("diverged") for v in tuned for p in v["learning_rate_grid"])
    ax, zero = common.accuracy_axes(fig, fig.add_gridspec(1, 1)[0], percents)
    for color, variant in zip(common.colors(len(tuned)), tuned, strict=True):
        grid = sorted(variant["learning_rate_grid"], key=lambda p: p["learning_rate"])
        ok = [(p["learning_rate"], 100 * p["val_accuracy"]) for p in grid
              if not p.get("diverged") and p.get("val_accuracy") is not None]  # fmt: skip
        if ok:
            ax.plot(*zip(*ok, strict=True), "o-", color=color, ms=4, label=variant["name"])
        bad = [p["learning_rate"] for p in grid if p.get("diverged")]
        if bad:
            (zero or ax).plot(bad, [0] * len(bad), "x", color=color, ms=8, mew=2, clip_on=False)
        rate = variant.get("learning_rate")
        chosen = [(r, a) for r, a in ok if rate is not None and np.isclose(r, rate)]
        if chosen:
            ax.plot(*chosen[0], "o", ms=13, mfc="none", mec=color, mew=2, gid=CHOSEN_GID)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))  # 0.01, not 10⁻²
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], marker="o", ms=11, mfc="none", mec="black", ls="none",
                          mew=2, label="chosen rate (best validation accuracy)"))  # fmt: skip
    if diverged_any:
        handles.append(Line2D([], [], marker="x", color="black", ls="none", mew=2,
                              label="diverged (loss became NaN), drawn at 0"))  # fmt: skip
    ax.legend(handles=handles, fontsize=8, loc="best")
    common.finish_accuracy_axes(ax, zero, "learning rate (log)", "final validation accuracy (%)")
    ax.set_title("Learning-rate grids: one tuning run per rate", fontsize=10)
    return fig
