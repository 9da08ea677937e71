"""Whether a prediction made before the runs held: each consequence against measured intervals.

A prediction (`experiments.predictions`) is judged part by part, each part one consequence
the runs can contradict: one batch size's digits to the target, one scaling's largest stable
rate, one pair's order. A part

- **held** when the predicted range and the measured interval overlap;
- **missed** when they don't: by how much is the gap between them, as a factor for counts and
  rates ("missed by ×3.1") or in the metric's units for differences;
- is **inconclusive** when the runs can't tell: fewer than two seeds, no interval, a test
  whose interval spans both answers;
- is **pending** while the runs it needs are not done.

Measured intervals are t-based confidence intervals of the mean over seeds at the
Bonferroni level `1 − 0.05 / k` over a prediction's `k` parts (as `statistics.judge`
corrects its tests), widened where the measurement itself is coarse: a time to the target
is read at the end of an epoch, so the true crossing lies up to one epoch earlier. The whole
prediction missed if any part missed, held if at least one held and none missed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from digitlab.data import NUM_CLASSES
from digitlab.experiments.figures_common import mean_interval
from digitlab.experiments.results import NEAR_CHANCE
from digitlab.experiments.schema import ExperimentRecord, GridPoint, VariantResult
from digitlab.experiments.statistics import welch

ALPHA = 0.05
# Saturated shares: the Gaussian approximation is held to within 2 points of the measurement.
SATURATION_TOLERANCE = 0.02


def level(parts: int) -> float:
    """The Bonferroni level of each of `parts` intervals: 1 − 0.05 / parts."""
    return 1 - ALPHA / max(parts, 1)


def part(name: str, words: str, verdict: str, measured: str = "", why: str = "", **values):
    """A `PredictionPart` as a dict; `values` are its numbers (None for none)."""
    finite = {
        k: (float(v) if v is not None and math.isfinite(v) else None) for k, v in values.items()
    }
    return {
        "name": name,
        "predicted": words,
        "measured": measured,
        "verdict": verdict,
        "why": why,
        "values": finite,
    }


def overall(parts: Sequence[dict[str, Any]]) -> tuple[str, str]:
    """The prediction's verdict and its sentence from its parts' verdicts."""
    missed = [p for p in parts if p["verdict"] == "missed"]
    held = [p for p in parts if p["verdict"] == "held"]
    pending = [p for p in parts if p["verdict"] == "pending"]
    if missed:
        worst = missed[0]
        others = f" (and {len(missed) - 1} more)" if len(missed) > 1 else ""
        return "missed", f"missed {worst['why']}{others}"
    if held:
        others = [p["verdict"] for p in parts if p["verdict"] != "held"]
        tail = "".join(
            f"; {others.count(v)} {v}" for v in ("inconclusive", "pending") if v in others
        )
        ratios = [
            max(p["values"]["predicted"], p["values"]["measured_mean"])
            / min(p["values"]["predicted"], p["values"]["measured_mean"])
            for p in held
            if (p["values"].get("predicted") or 0) > 0
            and (p["values"].get("measured_mean") or 0) > 0
        ]
        if ratios:
            tail += f"; the point predictions within ×{max(ratios):.2g} of the measured means"
        return (
            "held",
            f"held: {len(held)} of {len(parts)} consequences within the measured intervals{tail}",
        )
    if pending and len(pending) == len(parts):
        return "pending", "pending: the runs it needs are not done yet"
    reasons = sorted({p["why"] for p in parts if p["why"]})
    return "inconclusive", "inconclusive: " + ("; ".join(reasons) or "nothing to test it on")


def factor(a: float, b: float) -> str:
    """ "×3.1": how many times the larger of two positive numbers is the smaller."""
    if min(a, b) <= 0:
        return "×∞"
    ratio = max(a, b) / min(a, b)
    return f"×{ratio:.0f}" if ratio >= 10 else f"×{ratio:.2g}"


def count(value: float) -> str:
    return "∞" if not math.isfinite(value) else f"{value:,.0f}"


def span(low: float, high: float) -> str:
    return f"{count(low)}–{count(high)}" if math.isfinite(high) else f"more than {count(low)}"


# ------------------------------------------------------------------------ digits to target
def reached(variant: VariantResult | None, fit: int, at: float) -> dict[str, Any] | None:
    """The digits `variant` took to the target: an interval of their mean over seeds at
    level `at`, one epoch (`fit` digits) lower at its low end (each value is read at the end
    of the epoch that crossed it); a bound `(low, ∞)` when some seeds never reached it, the
    unreached ones counted at their last epoch. None without finished runs."""
    summary = variant.examples_to_target if variant is not None else None
    if summary is None:
        return None
    values, missing = list(summary.values), summary.missing
    if not values and not missing:
        return None
    if missing:
        end = (variant.epochs or 0) * fit
        mean = (sum(values) + missing * end) / (len(values) + missing)
        n = len(values) + missing
        return {"low": max(mean - fit, 0.0), "high": math.inf, "n": n, "mean": mean}
    mean, low, high = mean_interval(values, at)
    mean = float(mean)
    if low is None:
        return {"low": max(mean - fit, 0.0), "high": mean, "n": 1, "mean": mean}
    return {"low": max(float(low) - fit, 0.0), "high": float(high), "n": len(values), "mean": mean}


def examples_ratio(batch: float, anchor: float, noise: float) -> float:
    """E(B) / E(B₀) on the trade-off with `B_crit = noise` (McCandlish et al. 2018, eq. 2.11:
    `E = E_min (1 + B / B_crit)`)."""
    return (batch + noise) / (anchor + noise)


def noise_scale_parts(record: ExperimentRecord, measured: dict[str, Any]) -> list[dict]:
    """Each batch size's digits to the target, predicted from `B_simple` and the anchor's
    measured digits, against its own."""
    fit = int(record.budget.get("fit_samples") or 0)
    noise, error = measured.get("noise_scale"), measured.get("standard_error") or 0.0
    by_name = {v.name: v for v in record.variants}
    anchor = by_name.get(measured.get("variant", ""))
    others = [v for v in record.variants if anchor is None or v.name != anchor.name]
    at = level(len(others))
    if noise is None or anchor is None:
        why = "the noise scale could not be measured" if noise is None else "no anchor variant"
        return [part(v.name, "", "inconclusive", why=why) for v in others]
    base = reached(anchor, fit, at)
    b0 = min(anchor.batch_size, fit)
    noises = (max(noise - 2 * error, 0.0), noise + 2 * error)  # B_noise ± 2 SE
    return [_batch_part(v, base, b0, noise, noises, fit, at, record) for v in others]


def _batch_part(v, base, b0, noise, noises, fit, at, record) -> dict:
    """One batch size's predicted digits to the target (the anchor's interval × the ratio
    over `B_noise ± 2 SE`) against its measured interval."""
    batch = min(v.batch_size, fit)
    ratio = examples_ratio(batch, b0, noise)
    ratios = [examples_ratio(batch, b0, n) for n in noises]
    numbers: dict[str, float | None] = {"batch": batch, "ratio": ratio}
    words = f"×{ratio:.2g} the anchor's digits"
    waiting = "pending" if record.status == "interrupted" else "inconclusive"
    if base is None:
        return part(v.name, words, waiting, why="the anchor has no finished runs", **numbers)
    if not math.isfinite(base["high"]):
        why = "the anchor did not reach the target in every seed: no point to anchor on"
        return part(v.name, words, "inconclusive", why=why, **numbers)
    low, high = base["low"] * min(ratios), base["high"] * max(ratios)
    point = ratio * base["mean"]
    words = f"{words}: ≈ {count(point)} ({span(low, high)}) digits"
    numbers |= {"predicted_low": low, "predicted_high": high, "predicted": point}
    found = reached(v, fit, at)
    if found is None:
        return part(v.name, words, waiting, why=f"{v.name} has no finished runs", **numbers)
    numbers |= {
        "measured_low": found["low"],
        "measured_high": found["high"],
        "measured_mean": found["mean"] if math.isfinite(found["high"]) else None,
    }
    measured = f"{span(found['low'], found['high'])} digits ({found['n']} seeds)"
    if math.isfinite(found["high"]):
        measured = (
            f"≈ {count(found['mean'])} ({span(found['low'], found['high'])}) digits, "
            f"{found['n']} seeds"
        )
    if min(base["n"], found["n"]) < 2:
        why = "fewer than 2 seeds: no interval"
        return part(v.name, words, "inconclusive", measured, why, **numbers)
    if found["low"] > high:
        why = (
            f"by {factor(found['low'], high)} at {v.name}: it took {measured}, more than predicted"
        )
        return part(v.name, words, "missed", measured, why, **numbers)
    if found["high"] < low:
        why = (
            f"by {factor(low, found['high'])} at {v.name}: it took {measured}, fewer than predicted"
        )
        return part(v.name, words, "missed", measured, why, **numbers)
    return part(v.name, words, "held", measured, **numbers)


# ----------------------------------------------------------------------------- curvature
def failed(point: GridPoint) -> bool:
    """Whether a grid rate failed to train: its loss became NaN, or its validation accuracy
    ended within `NEAR_CHANCE` of chance (a bounded loss can blow up without a NaN: sigmoid
    layers saturate and the network stops learning)."""
    chance = 1 / NUM_CLASSES
    accuracy = point.val_accuracy
    return point.diverged or (accuracy is not None and accuracy < chance + NEAR_CHANCE)


def stable_rate_parts(record: ExperimentRecord, rates: dict[str, float]) -> list[dict]:
    """Each SGD variant's predicted largest stable rate `2 / λ_max` against its grid: the
    largest rate that trained and the smallest above it that failed (`failed`) bound the
    measured one."""
    parts = []
    for v in record.variants:
        if v.name not in rates:
            continue
        limit = rates[v.name]
        words = f"stable below {limit:.3g}"
        if not v.learning_rate_grid:
            verdict = "pending" if record.status == "interrupted" else "inconclusive"
            parts.append(
                part(
                    v.name,
                    words,
                    verdict,
                    why="no learning-rate grid was run",
                    predicted_rate=limit,
                )
            )
            continue
        trained = [p.learning_rate for p in v.learning_rate_grid if not failed(p)]
        low = max(trained, default=0.0)
        high = min(
            (p.learning_rate for p in v.learning_rate_grid if failed(p) and p.learning_rate > low),
            default=math.inf,
        )
        measured = (
            f"{low:g} trained, {high:g} failed"
            if math.isfinite(high)
            else (f"every rate up to {low:g} trained")
        )
        numbers = {"predicted_rate": limit, "trained": low or None, "diverged": high}
        if trained and limit < low:
            why = f"by {factor(low, limit)} at {v.name}: SGD trained at {low:g}, above {limit:.3g}"
            parts.append(part(v.name, words, "missed", measured, why, **numbers))
        elif limit > high:
            why = f"by {factor(limit, high)} at {v.name}: SGD failed at {high:g}, below {limit:.3g}"
            parts.append(part(v.name, words, "missed", measured, why, **numbers))
        else:
            parts.append(part(v.name, words, "held", measured, **numbers))
    return parts


def order_part(
    record: ExperimentRecord, lower: str, higher: str, metric: str, at: float, predicted: str
) -> dict:
    """ "`lower` ends at a lower `metric` than `higher`": held when the Welch interval of the
    difference (at level `at`) lies below 0, missed when above, else inconclusive."""
    by_name = {v.name: v for v in record.variants}
    name, words = f"{lower} vs {higher}", metric.replace("_", " ")
    groups = [
        list(getattr(by_name[n], metric).values) if n in by_name else [] for n in (lower, higher)
    ]
    if min(len(g) for g in groups) < 2 or not any(np.var(g) > 0 for g in groups):
        verdict = "pending" if record.status == "interrupted" else "inconclusive"
        return part(name, predicted, verdict, why="fewer than 2 seeds each: no interval")
    contrast = welch(groups, (1, -1))
    low, high = contrast.interval(at)
    measured = f"{words} {contrast.estimate:+.3f} ({at:.1%} CI {low:+.3f} to {high:+.3f})"
    numbers = {"estimate": contrast.estimate, "low": low, "high": high}
    if high < 0:
        return part(name, predicted, "held", measured, **numbers)
    if low > 0:
        why = f"by {low:.3f} at least at {name}: {higher} ended at the lower {words}"
        return part(name, predicted, "missed", measured, why, **numbers)
    return part(
        name,
        predicted,
        "inconclusive",
        measured,
        f"{name}: the interval spans both orders",
        **numbers,
    )


def saturation_part(record: ExperimentRecord, name: str, predicted: float, at: float) -> dict:
    """The first sigmoid layer's predicted saturated share at initialisation against the
    runs' epoch-0 measurement (`activations`, on the validation batch), ± the tolerance."""
    variant = next((v for v in record.variants if v.name == name), None)
    values = []
    for layers in variant.activations.values() if variant is not None else []:
        first = next((s for layer, s in layers.items() if "saturated" in s), None)
        if first and first["saturated"]:
            values.append(first["saturated"][0])
    words = f"{predicted:.1%} saturated at the start (first sigmoid layer)"
    if not values:
        verdict = "pending" if record.status == "interrupted" else "inconclusive"
        return part(name, words, verdict, why="no activation statistics", predicted=predicted)
    mean, low, high = mean_interval(values, at)
    low, high = (mean, mean) if low is None else (float(low), float(high))
    low, high = low - SATURATION_TOLERANCE, high + SATURATION_TOLERANCE
    measured = f"{float(np.mean(values)):.1%} at epoch 0 ({len(values)} seeds)"
    numbers = {"predicted": predicted, "share": float(mean), "low": low, "high": high}
    if low <= predicted <= high:
        return part(name, words, "held", measured, **numbers)
    gap = low - predicted if predicted < low else predicted - high
    why = f"by {gap:.1%} at {name}: measured {measured}, predicted {predicted:.1%}"
    return part(name, words, "missed", measured, why, **numbers)


# ------------------------------------------------------------------------- short-run gap
def interaction_part(record: ExperimentRecord, claim: str, sign: int) -> dict:
    """The dropout claim's interaction, predicted to be `sign` (+1: dropout helps the network
    with the larger short-run gap more), against the claim's own test."""
    found = next((c for c in record.claims if c.name == claim), None)
    predicted = "higher" if sign > 0 else "lower"
    words = f"the interaction of claim '{claim}' is {predicted} than 0"
    if found is None or found.verdict == "not tested":
        verdict = "pending" if record.status == "interrupted" else "inconclusive"
        why = found.why if found is not None and found.why else "the claim was not tested"
        return part(claim, words, verdict, why=why)
    measured = f"{found.estimate:+.4f}" if found.estimate is not None else "–"
    if found.low is not None and found.high is not None:
        measured += f" ({found.level:.1%} CI {found.low:+.4f} to {found.high:+.4f})"
    numbers = {"estimate": found.estimate, "low": found.low, "high": found.high}
    if found.verdict == predicted:
        return part(claim, words, "held", measured, **numbers)
    if found.verdict in ("higher", "lower", "equivalent"):
        why = f"at claim '{claim}': measured {found.verdict} ({measured})"
        return part(claim, words, "missed", measured, why, **numbers)
    return part(
        claim, words, "inconclusive", measured, found.why or "the test could not tell", **numbers
    )


def gain_part(record: ExperimentRecord, variants: Sequence[str], at: float, words: str) -> dict:
    """ "(a − b) − (c − d) > 0 in test accuracy" for `variants` [a, b, c, d]: dropout's gain
    (a − b) at one size above its gain (c − d) at another. Held when the Welch interval of
    the contrast (at level `at`) lies above 0, missed when below, else inconclusive."""
    by_name = {v.name: v for v in record.variants}
    name = f"({variants[0]} − {variants[1]}) − ({variants[2]} − {variants[3]})"
    groups = [list(by_name[n].test_accuracy.values) if n in by_name else [] for n in variants]
    if min(len(g) for g in groups) < 2 or not any(np.var(g) > 0 for g in groups):
        verdict = "pending" if record.status == "interrupted" else "inconclusive"
        return part(name, words, verdict, why="fewer than 2 seeds each: no interval")
    contrast = welch(groups, (1, -1, -1, 1))
    low, high = contrast.interval(at)
    measured = (
        f"test accuracy {contrast.estimate * 100:+.2f} points "
        f"({at:.1%} CI {low * 100:+.2f} to {high * 100:+.2f})"
    )
    numbers = {"estimate": contrast.estimate, "low": low, "high": high}
    if low > 0:
        return part(name, words, "held", measured, **numbers)
    if high < 0:
        why = f"by {-high * 100:.2f} points at least: dropout gained less at {variants[0]}"
        return part(name, words, "missed", measured, why, **numbers)
    return part(
        name, words, "inconclusive", measured, f"{name}: the interval spans both signs", **numbers
    )


# ------------------------------------------------------------- each mechanism's parts
def curvature_parts(record: ExperimentRecord, measured: dict) -> list[dict]:
    """The curvature prediction's parts: each SGD variant's stable rate, each predicted
    order of final training loss, each saturated share at the start."""
    rates = {name: r["rate"] for name, r in measured.get("stable_rates", {}).items()}
    order = measured.get("order", [])
    saturation = measured.get("saturation", {})
    at = level(len(rates) + len(order) + len(saturation))
    parts = stable_rate_parts(record, rates)
    spreads = measured.get("conditioning", {})
    for a, b in order:
        words = (
            f"{a} ends at a lower training loss than {b} (spread "
            f"{spreads[a]['top_to_median']:,.0f} vs {spreads[b]['top_to_median']:,.0f})"
        )
        parts.append(order_part(record, a, b, "final_train_loss", at, words))
    for name, share in saturation.items():
        parts.append(saturation_part(record, name, share["predicted"], at))
    return parts


def short_run_parts(record: ExperimentRecord, measured: dict) -> list[dict]:
    """The short-run-gap prediction's parts: the interaction claim's sign and the two
    networks' gap order after the full runs."""
    larger, smaller = measured["larger"], measured["smaller"]
    words = f"{smaller}'s gap stays below {larger}'s after the full runs"
    return [
        interaction_part(record, measured["claim"], measured["sign"]),
        order_part(record, smaller, larger, "generalization_gap", level(2), words),
    ]


def size_gap_parts(record: ExperimentRecord, measured: dict) -> list[dict]:
    """The size-gap prediction's parts: dropout's gain at the size with the largest short-run
    gap above its gain at the smallest, and those two sizes' gap order after the full runs."""
    large, small = measured["largest"], measured["smallest"]
    at = level(2)
    gain = f"dropout's gain on {large['digits']:,} digits exceeds its gain on {small['digits']:,}"
    order = (
        f"without dropout, {small['without']}'s gap stays below {large['without']}'s "
        "after the full runs"
    )
    variants = (large["with"], large["without"], small["with"], small["without"])
    return [
        gain_part(record, variants, at, gain),
        order_part(record, small["without"], large["without"], "generalization_gap", at, order),
    ]
