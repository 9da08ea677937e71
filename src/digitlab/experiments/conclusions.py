"""Conclusions computed from the numbers: mean differences and whether seeds can tell them apart.

A difference between two variants is tested with Welch's t-test (`scipy.stats.ttest_ind`,
`equal_var=False`: the variants' seed-to-seed spreads need not be equal), at the 5% level,
with its 95% confidence interval. A difference the test can't tell from the spread is said
to be "no measurable difference"; with one seed there is no spread to compare against, and
the sentence says so instead of claiming anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
STATISTICS = (
    "Differences across seeds are tested with Welch's t-test (unequal variances) at the 5% "
    "level, with its 95% confidence interval; with one seed there is no uncertainty estimate."
)


@dataclass(frozen=True)
class Difference:
    """`a − b` across seeds, and whether it stands out from the seed-to-seed spread."""

    mean: float
    low: float | None  # the 95% confidence interval of the difference (None: no estimate)
    high: float | None
    p: float | None
    measurable: bool  # p < ALPHA: larger than the seed-to-seed spread explains

    @property
    def estimated(self) -> bool:
        return self.p is not None


def summarize(values: Sequence[float]) -> dict[str, float | list[float] | None]:
    """`{"mean", "std", "values"}`: the std with ddof=1, 0.0 for one value, None for none."""
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": None, "std": None, "values": []}
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "values": values}


def difference(a: Sequence[float], b: Sequence[float]) -> Difference:
    """The mean of `a` minus the mean of `b`, with Welch's t-test when both have 2+ values."""
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    mean = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return Difference(mean, None, None, None, False)
    if a.std() == 0 and b.std() == 0:  # no spread at all: identical runs (deterministic seeds)
        return Difference(mean, mean, mean, 1.0 if mean == 0 else 0.0, mean != 0)
    result = stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(1 - ALPHA)
    p = float(result.pvalue)
    return Difference(mean, float(interval.low), float(interval.high), p, p < ALPHA)


def _points(value: float) -> str:
    """An accuracy difference in percentage points."""
    return f"{value * 100:+.2f} points"


def compare_sentence(
    name: str, baseline: str, a: Sequence[float], b: Sequence[float], what: str = "test accuracy"
) -> str:
    """One sentence comparing variant `name` (values `a`) with `baseline` (values `b`)."""
    d = difference(a, b)
    if not d.estimated:
        return (
            f"{name} vs {baseline}: {what} {_points(d.mean)} (one seed: no uncertainty "
            "estimate, so no effect is claimed; run with --seeds 3 or more)."
        )
    interval = f"95% CI {_points(d.low)} to {_points(d.high)}, Welch p = {d.p:.3f}"
    if not d.measurable:
        return (
            f"{name} vs {baseline}: no measurable difference in {what} "
            f"({_points(d.mean)}; {interval}): within the seed-to-seed spread."
        )
    direction = "higher" if d.mean > 0 else "lower"
    return f"{name} has a {direction} {what} than {baseline}: {_points(d.mean)} ({interval})."


def conclude(
    results: Mapping[str, Mapping[str, Sequence[float]]],
    baseline: str,
    pairs: Sequence[tuple[str, str]] | None = None,
) -> list[str]:
    """The comparisons every experiment makes: test accuracy and generalisation gap of each
    variant against its reference, then the variants ranked by mean test accuracy.

    Args:
        results: variant name -> {"test_accuracy": [per seed], "generalization_gap": [...]}.
        baseline: the variant the others are compared with when `pairs` is not given.
        pairs: (variant, reference) pairs to compare; pairs with a missing side are skipped.
    """
    lines = []
    if pairs is None:
        pairs = [(name, baseline) for name in results if name != baseline]
    for name, reference in pairs:
        values, base = results.get(name), results.get(reference)
        if not values or not base or not values.get("test_accuracy"):
            continue
        if not base.get("test_accuracy"):
            continue
        baseline = reference
        lines.append(
            compare_sentence(name, baseline, values["test_accuracy"], base["test_accuracy"])
        )
        gap, base_gap = values.get("generalization_gap"), base.get("generalization_gap")
        if gap and base_gap:
            d = difference(gap, base_gap)
            if d.estimated and d.measurable:
                word = "larger" if d.mean > 0 else "smaller"
                lines.append(
                    f"{name} has a {word} generalisation gap (validation − training loss) than "
                    f"{baseline}: {d.mean:+.3f} (95% CI {d.low:+.3f} to {d.high:+.3f}, "
                    f"Welch p = {d.p:.3f})."
                )
            elif d.estimated:
                lines.append(
                    f"{name} vs {baseline}: no measurable difference in generalisation gap "
                    f"({d.mean:+.3f}, Welch p = {d.p:.3f})."
                )
    ranked = sorted(
        (
            (float(np.mean(v["test_accuracy"])), n)
            for n, v in results.items()
            if v.get("test_accuracy")
        ),
        reverse=True,
    )
    if ranked:
        lines.append(
            "Mean test accuracy, best first: "
            + ", ".join(f"{name} {acc:.2%}" for acc, name in ranked)
            + "."
        )
    return lines


def first_reaching(curve: Sequence[float], target: float) -> int | None:
    """The index of the first value ≥ target, or None."""
    for index, value in enumerate(curve):
        if value is not None and value >= target:
            return index
    return None
