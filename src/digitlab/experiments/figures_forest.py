"""The forest plot: every tested difference with its adjusted interval and equivalence margin.

One row per test (claims first, then the comparisons), one panel per unit (accuracy in
points, losses, epochs, updates, examples, seconds): the estimate a − b (or the interaction
(a − b) − (c − d)) as a point, its interval (at its Holm step's level, as the statistics gave
it) as a line coloured by the Holm-adjusted verdict, the ±margin shaded behind it, zero as a line.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from digitlab.experiments import figures_common as common

LOSS = ("loss", 1.0, "difference in loss (cross-entropy)")
# metric -> (unit group, scale to that unit, the x label of the group's panel)
UNITS: dict[str, tuple[str, float, str]] = {
    "test_accuracy": ("accuracy", 100.0, "difference in test accuracy (percentage points)"),
    "generalization_gap": LOSS,
    "final_train_loss": LOSS,
    "final_val_loss": LOSS,
    "gap_at_matched_loss": LOSS,
    "sharpness_at_matched_loss": ("sharpness", 1.0, "difference in λ_max at matched loss"),
    "epochs_to_target": ("epochs", 1.0, "difference in epochs to the target"),
    "updates_to_target": ("updates", 1.0, "difference in weight updates to the target"),
    "examples_to_target": ("examples", 1.0, "difference in training examples to the target"),
    "seconds_to_target": ("seconds", 1.0, "difference in training seconds to the target"),
}
METRIC_NAMES = {
    "test_accuracy": "test accuracy",
    "generalization_gap": "gap",
    "final_train_loss": "training loss",
    "final_val_loss": "validation loss",
    "gap_at_matched_loss": "gap at matched loss",
    "sharpness_at_matched_loss": "sharpness at matched loss",
    "epochs_to_target": "epochs to target",
    "updates_to_target": "updates to target",
    "examples_to_target": "examples to target",
    "seconds_to_target": "seconds to target",
}
VERDICTS = {  # verdict -> (colour, legend label)
    "higher": ("#1f77b4", "higher: a − b > 0 (Holm-adjusted)"),
    "lower": ("#e67e22", "lower: a − b < 0 (Holm-adjusted)"),
    "equivalent": ("#2ca02c", "equivalent within ±margin (TOST)"),
    "inconclusive": ("#7f7f7f", "inconclusive"),
    "not tested": ("#b0b0b0", "not tested"),
}
MARGIN_COLOR = "#f3dfa2"
MARGIN_GID, INTERVAL_GID, ESTIMATE_GID = "margin", "interval", "estimate"


def listed_tests(tests: Any) -> list[dict[str, Any]]:
    """The tests as dicts, claims (those with a `name`) first: from a list of dicts or
    models, or from an object with `claims` and `tests` (a judgement)."""
    if hasattr(tests, "claims") and hasattr(tests, "tests"):
        tests = [*tests.claims, *tests.tests]
    items = [t.model_dump() if hasattr(t, "model_dump") else dict(t) for t in tests or ()]
    return sorted(items, key=lambda t: not t.get("name"))


def difference(variants: Any) -> str:
    """ "a − b", or "(a − b) − (c − d)" for an interaction."""
    names = list(variants)
    if len(names) == 4:
        return f"({names[0]} − {names[1]}) − ({names[2]} − {names[3]})"
    return " − ".join(names)


def row_label(test: dict[str, Any]) -> str:
    """A claim's name and what it expected, or the comparison's metric; then the difference."""
    if test.get("name"):
        head = f"{test['name']} (claim, expected {test.get('expect', '?')})"
    else:
        head = METRIC_NAMES.get(test["metric"], test["metric"])
    return common.wrap(head, 40) + "\n" + common.wrap(difference(test["variants"]), 40)


def _groups(tests: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The tests by unit group, groups in order of their first test."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for test in tests:
        groups.setdefault(UNITS.get(test["metric"], LOSS)[0], []).append(test)
    return groups


def _row(ax, y: int, test: dict[str, Any], scale: float) -> list[float]:
    """Draw one test at row `y`; returns the x values it covers."""
    margin = float(test.get("margin") or 0) * scale
    if margin:
        ax.add_patch(Rectangle((-margin, y - 0.38), 2 * margin, 0.76, color=MARGIN_COLOR,
                               lw=0, zorder=0, gid=MARGIN_GID))  # fmt: skip
    estimate = test.get("estimate")
    color = VERDICTS.get(test["verdict"], VERDICTS["not tested"])[0]
    if estimate is None:
        why = test.get("why") or test.get("sentence") or ""
        text = "not tested" + (f": {why}" if why else "")
        ax.text(0, y, common.wrap(text, 60), ha="center", va="center", fontsize=8,
                color="#555555", style="italic",
                bbox={"fc": "white", "ec": "none", "alpha": 0.8})  # fmt: skip
        return [-margin, margin]
    covered = [estimate * scale, -margin, margin]
    if test.get("low") is not None and test.get("high") is not None:
        low, high = test["low"] * scale, test["high"] * scale
        ax.plot([low, high], [y, y], "-", color=color, lw=2.5, solid_capstyle="butt",
                gid=INTERVAL_GID)  # fmt: skip
        ax.plot([low, high], [y, y], "|", color=color, ms=9, mew=2)
        covered += [low, high]
    ax.plot([estimate * scale], [y], "o", color=color, ms=7, mec="white", gid=ESTIMATE_GID)
    return covered


def _levels_note(tests: list[dict[str, Any]]) -> str:
    levels = sorted({t["level"] for t in tests if t.get("level")})
    if not levels:
        return "intervals as computed by the tests"
    shown = " to ".join(f"{x:.2%}" for x in (levels[0], levels[-1])[: len(levels)])
    return f"intervals: {shown}, each at its Holm step's level: it excludes 0 iff its test rejects"


def forest_figure(tests: list[dict[str, Any]]) -> Figure:
    """Every tested difference: estimate, adjusted interval, ±margin band, verdict colour;
    one panel per unit group, one row per test, untested rows saying so."""
    groups = _groups(tests)
    sizes = [len(rows) + 1.2 for rows in groups.values()]
    fig = Figure(figsize=(common.WIDTH, 0.55 * sum(sizes) + 1.6), layout="constrained")
    panels = fig.subplots(len(groups), 1, squeeze=False, height_ratios=sizes).ravel()
    for ax, rows in zip(panels, groups.values(), strict=True):
        unit = next(UNITS.get(t["metric"], LOSS) for t in rows)
        covered = [x for y, test in enumerate(rows) for x in _row(ax, y, test, unit[1])]
        reach = max((abs(x) for x in covered if np.isfinite(x)), default=0.0) or 1.0
        ax.set_xlim(-1.12 * reach, 1.12 * reach)
        ax.axvline(0, color="black", lw=0.8, zorder=1)
        ax.set_yticks(range(len(rows)), [row_label(t) for t in rows], fontsize=8)
        for label, test in zip(ax.get_yticklabels(), rows, strict=True):
            label.set_fontweight("bold" if test.get("name") else "normal")
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.set_xlabel(unit[2], fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    drawn = [t for t in tests if t.get("estimate") is not None]  # the others say so in words
    verdicts = [v for v in VERDICTS if any(t["verdict"] == v for t in drawn)]
    handles = [Line2D([], [], color=VERDICTS[v][0], marker="o", lw=2.5, label=VERDICTS[v][1])
               for v in verdicts]  # fmt: skip
    handles.append(Patch(color=MARGIN_COLOR, label="±margin (smallest effect of interest)"))
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle("Every tested difference (claims in bold)\n" + _levels_note(tests), fontsize=10)
    return fig
