"""The training-set-size sweep's lead figure: what the short runs predicted, and what came.

Three panels, the sizes on a log axis in each: the test accuracy with and without dropout
(Srivastava et al. 2014, Fig. 10, for the learner's own network); before the runs, the gap
of the short runs without dropout, the predicted largest and smallest marked; after them,
dropout's gain at each size (with − without) with its Welch 95% interval, against 0.
"""

from __future__ import annotations

from matplotlib.figure import Figure

from digitlab.experiments import figures_common as common
from digitlab.experiments.schema import ExperimentRecord
from digitlab.experiments.statistics import welch

WITHOUT, WITH = "#1f4e99", "#d35400"
PREDICTED = "#8e44ad"


def _values(by_name: dict, name: str) -> list[float]:
    variant = by_name.get(name)
    return list(variant.test_accuracy.values) if variant is not None else []


def size_figure(record: ExperimentRecord) -> Figure:
    """Accuracy per size with and without dropout, the short runs' gaps, dropout's gain."""
    measured = record.prediction.measured
    sizes = measured.get("sizes", [])
    by_name = {v.name: v for v in record.variants}
    fig = Figure(figsize=(common.WIDTH, 3.7), layout="constrained")
    accuracy, before, after = fig.subplots(1, 3)
    for kind, color, label in (("without", WITHOUT, "no dropout"), ("with", WITH, "dropout")):
        for i, size in enumerate(sizes):
            values = [v * 100 for v in _values(by_name, size[kind])]
            if values:
                style = {"label": label} if i == 0 else {}
                common.mean_with_whisker(accuracy, size["digits"], values, color, **style)
        points = [
            (s["digits"], sum(v) / len(v) * 100) for s in sizes if (v := _values(by_name, s[kind]))
        ]
        if points:
            accuracy.plot(*zip(*points, strict=True), color=color, lw=1, alpha=0.6)
    accuracy.set_title("Test accuracy", fontsize=10)
    accuracy.set_ylabel("test accuracy (%)", fontsize=8)
    accuracy.legend(fontsize=7, loc="lower right")
    marks = {measured.get(end, {}).get("digits"): end for end in ("largest", "smallest")}
    for size in sizes:
        before.bar(size["digits"], size["gap"], width=size["digits"] * 0.5, color=PREDICTED)
        if marks.get(size["digits"]):
            before.annotate(
                marks[size["digits"]], (size["digits"], size["gap"]), fontsize=7, ha="center",
                va="bottom", xytext=(0, 2), textcoords="offset points",
            )  # fmt: skip
    if sizes:
        before.set_ylim(0, max(max(s["gap"] for s in sizes), 0) * 1.15 or 1)
    before.set_title(f"Before: gap after {measured.get('updates')} updates", fontsize=10)
    before.set_ylabel("validation − training loss", fontsize=8)
    after.axhline(0, color="k", lw=0.8)
    for size in sizes:
        groups = [_values(by_name, size["with"]), _values(by_name, size["without"])]
        if min(len(g) for g in groups) < 2 or not any(len(set(g)) > 1 for g in groups):
            continue
        contrast = welch(groups, (1, -1))
        low, high = contrast.interval(common.LEVEL)
        mean = contrast.estimate * 100
        after.errorbar(
            [size["digits"]], [mean], yerr=[[mean - low * 100], [high * 100 - mean]],
            fmt="o", color=PREDICTED if marks.get(size["digits"]) else WITH, capsize=4,
        )  # fmt: skip
    after.set_title("After: dropout's gain (95% CI)", fontsize=10)
    after.set_ylabel("with − without, test accuracy (points)", fontsize=8)
    for ax in (accuracy, before, after):
        ax.set_xscale("log")
        ax.set_xlabel("training digits", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    return fig
