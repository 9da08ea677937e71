"""How an experiment's numbers are said: units, p-values, a sentence per judged test, the answer
in plain words and "how we know"; and the per-seed summaries `results` records.

`statistics.judge` computes; this module only words what it computed, from `schema.Test` and
`schema.ClaimResult` dicts, so a page or a terminal view can word a record the same way.
Accuracies are printed in points ("+0.60 points"), losses and gaps as "+0.086", counts as
"+1,200 updates", seconds as "+3.2 s"; a p-value is never "0.000" but "< 0.001".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

POWER = 0.8  # the power `detectable` and `seeds_needed` are for
# metric -> (noun, more, less, unit kind)
WORDS = {
    "test_accuracy": ("test accuracy", "a higher", "a lower", "points"),
    "generalization_gap": ("generalisation gap", "a larger", "a smaller", "loss"),
    "final_train_loss": ("final training loss", "a higher", "a lower", "loss"),
    "final_val_loss": ("final validation loss", "a higher", "a lower", "loss"),
    "epochs_to_target": ("epochs to the target", "more", "fewer", "epochs"),
    "updates_to_target": ("updates to the target", "more", "fewer", "updates"),
    "examples_to_target": ("examples to the target", "more", "fewer", "examples"),
    "seconds_to_target": ("seconds to the target", "more", "fewer", "seconds"),
    "gap_at_matched_loss": ("gap at matched training loss", "a larger", "a smaller", "loss"),
    "sharpness_at_matched_loss": (
        "sharpness (λ_max) at matched training loss",
        "a larger",
        "a smaller",
        "loss",
    ),
}
SMOKE = "a smoke run (--quick): too small to conclude anything"
HOW = (
    "Each difference is the mean over seeds of one variant minus another (an interaction: "
    "(a − b) − (c − d)), with Welch's standard error and degrees of freedom (unequal "
    "variances). A difference is claimed where Welch's two-sided t-test finds one; equivalence "
    "where two one-sided tests against ±margin do (TOST, Lakens 2017). The margin is a "
    "claim's smallest effect of interest"
)


def summarize(values: Sequence[float]) -> dict[str, float | list[float] | None]:
    """`{"mean", "std", "values"}`: the std with ddof=1, 0.0 for one value, None for none."""
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not values:
        return {"mean": None, "std": None, "values": []}
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(np.mean(values)), "std": std, "values": values}


def first_reaching(curve: Sequence[float], target: float) -> int | None:
    """The index of the first value ≥ target, or None."""
    for index, value in enumerate(curve):
        if value is not None and value >= target:
            return index
    return None


# ------------------------------------------------------------------------------ numbers
def format_p(p: float | None, name: str = "p") -> str:
    """ "p < 0.001" or "p = 0.012" (`name` replaces "p"): never "p = 0.000"."""
    if p is None:
        return f"{name} not computed"
    return f"{name} < 0.001" if p < 0.001 else f"{name} = {p:.3f}"


def _minus(text: str) -> str:
    return text.replace("-", "−")


def points(value: float, signed: bool = True) -> str:
    """An accuracy or accuracy difference in percentage points: "+0.60 points"."""
    return _minus(f"{value * 100:{'+' if signed else ''}.2f} points")


def amount(metric: str, value: float, signed: bool = True, unit: bool = True) -> str:
    """A value of `metric` in its units: accuracies in points ("+0.60 points"), losses and gaps
    as "+0.086", epochs "+1.5 epochs", updates and examples "+1,200 updates", seconds "+3.2 s"."""
    kind, sign = WORDS[metric][3], "+" if signed else ""
    if kind == "points":
        text, suffix = f"{value * 100:{sign}.2f}", " points"
    elif kind == "loss":
        text, suffix = f"{value:{sign}.3f}", ""
    elif kind == "seconds":
        text, suffix = f"{value:{sign},.1f}", " s"
    else:
        digits = 1 if kind == "epochs" else 0
        text, suffix = f"{value:{sign},.{digits}f}", f" {kind}"
    return _minus(text + (suffix if unit else ""))


def percent(level: float) -> str:
    """A confidence level: 0.99375 → "99.4%", 0.95 → "95%"."""
    return f"{level * 100:.1f}".removesuffix(".0") + "%"


def _span(metric: str, low: float, high: float) -> str:
    return f"{amount(metric, low, unit=False)} to {amount(metric, high)}"


def _margin(metric: str, margin: float) -> str:
    if WORDS[metric][3] == "points":
        return f"±{points(margin, signed=False).removesuffix(' points')}-point margin"
    return f"margin of ±{amount(metric, margin, signed=False)}"


def _seeds(n: Sequence[int]) -> str:
    low, high = min(n), max(n)
    return f"{low} seeds" if low == high else f"{low}–{high} seeds"


# ------------------------------------------------------------------------------ sentences
def label(variants: Sequence[str], metric: str) -> str:
    """ "a vs b, test accuracy" or "(a − b) − (c − d), test accuracy"."""
    noun = WORDS[metric][0]
    if len(variants) == 2:
        return f"{variants[0]} vs {variants[1]}, {noun}"
    a, b, c, d = variants
    return f"({a} − {b}) − ({c} − {d}), {noun}"


def decided(variants: Sequence[str], metric: str, up: bool) -> str:
    """ "a has a higher test accuracy than b", "a needs fewer updates to the target than b",
    "a − b exceeds c − d in test accuracy"."""
    noun, more, less, kind = WORDS[metric]
    if len(variants) == 4:
        a, b, c, d = variants
        return f"{a} − {b} {'exceeds' if up else 'falls short of'} {c} − {d} in {noun}"
    verb = "has" if kind in ("points", "loss") else "needs"
    return f"{variants[0]} {verb} {more if up else less} {noun} than {variants[1]}"


def undecided(test: Mapping[str, Any], seeds: int | None, near: bool) -> str:
    """What an inconclusive test's interval cannot tell, and the seeds that would tell it.
    `near`: the test already has 80% power at ±margin, but its estimate lies between no effect
    and the margin (`seeds` then decide that)."""
    metric = test["metric"]
    spans = (
        f"the {percent(test['level'])} interval {_span(metric, test['low'], test['high'])} "
        f"spans the {_margin(metric, test['margin'])}"
    )
    if seeds is None:
        return f"{spans}; no practical number of seeds would decide it"
    if near:
        spans += ", with the estimate between no effect and the margin"
    return f"{spans}; about {seeds:,} seeds per variant would decide it"


def sentence(test: Mapping[str, Any], why: str = "") -> str:
    """One sentence for a judged `schema.Test` dict: its verdict, estimate, interval and
    Holm-adjusted p; `why` for one not tested or inconclusive."""
    metric, verdict, estimate = test["metric"], test["verdict"], test["estimate"]
    name = label(test["variants"], metric)
    if verdict == "not tested":
        return f"{name}: not tested: {why}."
    if verdict == "inconclusive":
        return f"{name}: inconclusive: {amount(metric, estimate)}; {why}."
    interval = f"{percent(test['level'])} CI {_span(metric, test['low'], test['high'])}"
    if verdict == "equivalent":
        return (
            f"{name}: equivalent within ±{amount(metric, test['margin'], signed=False)}: "
            f"{amount(metric, estimate)} ({interval}; "
            f"{format_p(test['p_equivalence_adjusted'], 'Holm-adjusted TOST p')})."
        )
    return (
        f"{decided(test['variants'], metric, verdict == 'higher')}: {amount(metric, estimate)} "
        f"({interval}; {format_p(test['p_adjusted'], 'Holm-adjusted p')})."
    )


def power_clause(test: Mapping[str, Any]) -> str:
    """ "Power at ±0.35 points: 31%; 80% power detects ±0.70 points." ("" if not tested)."""
    if test.get("power") is None:
        return ""
    metric = test["metric"]
    text = f"Power at ±{amount(metric, test['margin'], signed=False)}: {test['power']:.0%}"
    if test.get("detectable") is None:
        return f"{text}."
    return f"{text}; 80% power detects ±{amount(metric, test['detectable'], signed=False)}."


def answer(claim: Mapping[str, Any]) -> str:
    """A judged claim (`schema.ClaimResult` dict) in plain words, no p-values: "<statement>:
    yes, by 0.086 here." / "…: too small for 10 seeds to see; if the effect exists, it is
    under 1.66 points." (the interval's bound in the expected direction)."""
    metric, verdict = claim["metric"], claim["verdict"]
    statement = claim["statement"].rstrip(" .")
    if verdict == "not tested":
        return f"{statement}: not tested here ({claim['why']})."
    size = amount(metric, abs(claim["estimate"]), signed=False)
    margin = amount(metric, claim["margin"], signed=False)
    if verdict == "inconclusive":
        low, high = claim["low"], claim["high"]
        bound = {"higher": high, "lower": -low}.get(claim["expect"], max(-low, high))
        return (
            f"{statement}: too small for {_seeds(claim['n'])} to see; if the effect exists, it "
            f"is under {amount(metric, max(bound, 0.0), signed=False)}."
        )
    if claim["literature"] == "agrees":
        if verdict == "equivalent":
            return f"{statement}: yes, the difference here is under {margin}."
        return f"{statement}: yes, by {size} here."
    if verdict == "equivalent":
        return f"{statement}: not at this scale; any difference here is under {margin}."
    measured = f"{decided(claim['variants'], metric, verdict == 'higher')} by {size}"
    if claim["expect"] == "equivalent":
        return f"{statement}: not here; {measured}."
    return f"{statement}: not here, it went the other way; {measured}."


def how_we_know(
    m: int,
    claims: Sequence[Mapping[str, Any]],
    untested: int,
    smoke: bool,
    margins: Mapping[str, float],
) -> str:
    """The "How we know" paragraph: the tests, the margins (`margins`: the comparisons'
    defaults per metric), the correction over `m` p-values, the intervals' level, the
    claims' power, and how many comparisons could not be tested."""
    defaults = ", ".join(
        f"±{amount(k, v, signed=False)} of {WORDS[k][0]}" for k, v in margins.items()
    )
    how = f"{HOW}; a comparison's {defaults}."
    if smoke:
        return (
            f"A smoke run (--quick): too small to conclude anything, so nothing was tested. {how}"
        )
    if m == 0:
        return f"No comparison could be tested (each says why). {how}"
    parts = [
        how,
        f"All {m} p-values (a difference and an equivalence test for each of the {m // 2} "
        "tested comparisons) are Holm-adjusted (Holm 1979) and compared with α = 0.05; the "
        "interval of each difference is at the level of its Holm step, 1 − 0.05/(m − r + 1) "
        f"for the r-th smallest p (at most {percent(1 - 0.05 / m)} (1 − 0.05/{m})), so an "
        "interval excludes zero exactly when "
        "its test rejects; unlike Bonferroni's at 1 − 0.05/m for all, they are not "
        "simultaneous 95% intervals. Power is that of Welch's test for "
        "an effect the size of the margin at α/m (statsmodels' TTestIndPower); 'detects' is "
        "the effect found with 80% power.",
    ]
    powers = [
        f"{c['name']} {c['power']:.0%}"
        + (
            f" (80% would need about {c['seeds_needed']:,} seeds per variant)"
            if c["seeds_needed"] and c["power"] < POWER
            else ""
        )
        for c in claims
        if c.get("power") is not None
    ]
    if powers:
        parts.append(f"Power of the claims at their declared effects: {', '.join(powers)}.")
    if untested:
        parts.append(f"{untested} comparison{'s' * (untested > 1)} could not be tested (see each).")
    return " ".join(parts)


def ranking(variants: Sequence[Mapping[str, Any]], smoke: bool = False) -> str | None:
    """ "Mean test accuracy, best first: a 97.00%, b 95.00%." (None: no accuracy yet)."""
    ranked = sorted(
        (
            (v["test_accuracy"]["mean"], v["name"])
            for v in variants
            if (v.get("test_accuracy") or {}).get("mean") is not None
        ),
        reverse=True,
    )
    if not ranked:
        return None
    what = (
        "Mean test accuracy after this smoke run (not a finding)" if smoke else "Mean test accuracy"
    )
    return f"{what}, best first: " + ", ".join(f"{n} {a:.2%}" for a, n in ranked) + "."


# ---------------------------------------------- before issue 20 (until results uses judge)
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
