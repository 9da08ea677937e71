"""Verdicts an experiment's seeds can support: differences, equivalence, power, one family.

Every experiment prints one family of tests. For each declared claim, and for each compared
pair × metric (test accuracy, generalisation gap) that no claim already tests:

- the difference a − b (or the interaction (a − b) − (c − d)) of the seed means, with Welch's
  standard error SE² = Σ s²/n (s with ddof=1) and Welch–Satterthwaite degrees of freedom; its
  two-sided t-test (for two variants exactly `scipy.stats.ttest_ind(equal_var=False)`);
- two one-sided tests against ±margin (TOST, Lakens 2017), p = the larger of the two;
- every p of the family Holm-adjusted (Holm 1979, `statsmodels` multipletests) and compared
  with α = 0.05; each difference's interval at the level of its Holm step (`holm_levels`:
  1 − α/(m − r + 1) for the r-th smallest p, if rejected; else the level of the first step
  that failed), so that an interval excludes zero exactly when its adjusted test rejects
  (at 1 − α/m for all, Bonferroni's, a verdict could sit beside an interval spanning zero);
- the power at ±margin (α/m), the effect 80% power detects, and the seeds per variant that
  would give 80% power at ±margin (`statsmodels` TTestIndPower, see `power`).

Verdict: a Holm-adjusted difference p < α says "higher"/"lower" (the sign of the estimate);
else an adjusted TOST p < α says "equivalent" within ±margin; else "inconclusive". One seed, a
variant with fewer than two values (the target never reached), no spread at all, or a smoke
run: "not tested", saying why. `conclusions` words the verdicts. Pure NumPy/SciPy (statsmodels
imported where used): no Keras.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from digitlab.experiments import conclusions as words
from digitlab.experiments.conclusions import POWER, amount, format_p, points
from digitlab.experiments.schema import Claim, Definition

__all__ = [
    "ALPHA",
    "COMPARED",
    "DEFAULT_MARGINS",
    "Contrast",
    "Judgement",
    "Power",
    "amount",
    "default_margin",
    "format_p",
    "holm",
    "judge",
    "points",
    "power",
    "welch",
]

ALPHA = 0.05
COMPARED = ("test_accuracy", "generalization_gap")  # the metrics every compared pair is tested on
# The smallest difference that matters, per metric, where no claim declares one (*_to_target:
# 10% of the reference variant's mean, see `default_margin`)
DEFAULT_MARGINS = {
    "test_accuracy": 0.005,  # half an accuracy point
    "generalization_gap": 0.02,
    "final_train_loss": 0.02,
    "final_val_loss": 0.02,
    "gap_at_matched_loss": 0.02,
}
TO_TARGET_MARGIN = 0.1
MAX_SEEDS = 1_000_000  # more seeds per variant than this is "no practical number"


@dataclass(frozen=True)
class Judgement:
    """What an experiment's numbers support: dicts shaped as `schema.ClaimResult`/`schema.Test`,
    the answer in plain words, one sentence per test then the ranking, and "how we know"."""

    claims: list[dict[str, Any]]
    tests: list[dict[str, Any]]
    answer: list[str]
    lines: list[str]
    statistics: str


# ------------------------------------------------------------------------------ the numbers
@dataclass(frozen=True)
class Contrast:
    """Σ sign·mean over groups, Welch's standard error and Welch–Satterthwaite df."""

    estimate: float
    se: float
    df: float

    def p(self) -> float:
        """Two-sided p of "the contrast is 0"."""
        from scipy import stats

        return float(2 * stats.t.sf(abs(self.estimate) / self.se, self.df))

    def p_equivalence(self, margin: float) -> float:
        """TOST against ±margin: the larger p of "≤ −margin" and "≥ +margin" (Lakens 2017)."""
        from scipy import stats

        above = stats.t.sf((self.estimate + margin) / self.se, self.df)
        below = stats.t.cdf((self.estimate - margin) / self.se, self.df)
        return float(max(above, below))

    def interval(self, level: float) -> tuple[float, float]:
        """The two-sided confidence interval at `level`."""
        from scipy import stats

        half = float(stats.t.isf((1 - level) / 2, self.df)) * self.se
        return self.estimate - half, self.estimate + half


def welch(groups: Sequence[Sequence[float]], signs: Sequence[int]) -> Contrast:
    """The contrast Σ signs_i · mean(groups_i): (1, −1) is a − b, (1, −1, −1, 1) is
    (a − b) − (c − d). SE² = Σ s_i²/n_i; df = SE⁴ / Σ (s_i²/n_i)² / (n_i − 1). Each group
    needs 2+ values and one some spread."""
    arrays = [np.asarray(g, dtype=float) for g in groups]
    shares = [float(np.var(x, ddof=1)) / len(x) for x in arrays]
    se2 = sum(shares)
    df = se2**2 / sum(s**2 / (len(x) - 1) for s, x in zip(shares, arrays, strict=True) if s > 0)
    estimate = sum(sign * float(x.mean()) for sign, x in zip(signs, arrays, strict=True))
    return Contrast(estimate, math.sqrt(se2), df)


def holm_levels(pvalues: Sequence[float], adjusted: Sequence[float]) -> list[float]:
    """The confidence level that matches each Holm decision (Welch's p and its t interval
    are dual): 1 − α/(m − r + 1) for a rejected p of rank r (its step's threshold; the
    interval excludes zero), and for every other p the level of the first step that failed,
    1 − α/(m − f + 1) (its p is at least that step's: the interval holds zero). Not
    simultaneous 95% intervals: those are Bonferroni's, 1 − α/m, the widest of these."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    rank = {i: r for r, i in enumerate(order, start=1)}
    failed = min((rank[i] for i in range(m) if adjusted[i] >= ALPHA), default=m)
    return [1 - ALPHA / (m - (rank[i] if adjusted[i] < ALPHA else failed) + 1) for i in range(m)]


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (statsmodels' multipletests, method 'holm')."""
    if not pvalues:
        return []
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(list(pvalues), alpha=ALPHA, method="holm")[1]]


@dataclass(frozen=True)
class Power:
    power: float  # to detect ±margin
    detectable: float | None  # the effect (metric units) 80% power detects
    seeds_needed: int | None  # per variant for 80% power at ±margin (None: over MAX_SEEDS)


def _power(effect_size: float, nobs: float, alpha: float) -> float:
    """TTestIndPower's two-sided power. SciPy's noncentral t returns NaN at some parameters:
    then the near tail alone (all of the power where the far tail underflows), and for
    millions of seeds, where that too can fail, the normal approximation (NormalIndPower)."""
    from statsmodels.stats.power import NormalIndPower, TTestIndPower

    power = TTestIndPower().power(effect_size=effect_size, nobs1=nobs, alpha=alpha, ratio=1.0)
    if not math.isfinite(power):
        power = TTestIndPower().power(
            effect_size=effect_size, nobs1=nobs, alpha=alpha / 2, ratio=1.0, alternative="larger"
        )
    if not math.isfinite(power):
        power = NormalIndPower().power(effect_size=effect_size, nobs1=nobs, alpha=alpha)
    return float(power)


def power(groups: Sequence[Sequence[float]], margin: float, alpha: float) -> Power:
    """The power of the test at ±margin, what 80% power detects, and the seeds it needs.

    TTestIndPower is a two-sample t-test with n per side and common σ, whose noncentrality is
    d·√(n/2). We give it σ² = Σ s_i²/2 and n = Σ s_i² / Σ (s_i²/n_i), so that d·√(n/2) =
    margin/SE, exactly the Welch statistic's (two variants with equal n: the average of the
    two variances, and n). An interaction has four groups: σ² = Σ s_i²/2 is twice a pair's,
    as its variance is (four means instead of two). What is approximated: the degrees of
    freedom. TTestIndPower counts 2n − 2; Welch–Satterthwaite's are at most that for a pair
    (fewer where the variances differ: the power is then a little optimistic) and up to
    4n − 4 for an interaction (the power is then conservative). Solved with
    `scipy.optimize.brentq` on TTestIndPower.power: its solve_power fails to converge for
    2–4 seeds at small α.
    """
    from scipy.optimize import brentq

    variances = [float(np.var(np.asarray(g, dtype=float), ddof=1)) for g in groups]
    se2 = sum(v / len(g) for v, g in zip(variances, groups, strict=True))
    sigma = math.sqrt(sum(variances) / 2)
    nobs = sum(variances) / se2
    power_at_margin = _power(margin / sigma, nobs, alpha)

    def short(effect_size: float, n: float) -> float:
        return _power(effect_size, n, alpha) - POWER

    high = 1.0
    while short(high, nobs) < 0 and high < 1e6:
        high *= 4
    detectable = brentq(short, 1e-12, high, args=(nobs,)) * sigma if high < 1e6 else None
    needed: int | None = 2
    if short(margin / sigma, 2) < 0:
        more = short(margin / sigma, MAX_SEEDS) >= 0
        needed = (
            math.ceil(brentq(lambda n: short(margin / sigma, n), 2, MAX_SEEDS)) if more else None
        )
    return Power(power_at_margin, detectable, needed)


def default_margin(metric: str, reference: dict[str, Any] | None) -> float:
    """The margin of a comparison no claim declares: DEFAULT_MARGINS, or for a *_to_target
    metric 10% of the reference variant's mean."""
    if metric.endswith("_to_target"):
        mean = (reference or {}).get("mean")
        return TO_TARGET_MARGIN * abs(mean) if mean else 0.0
    return DEFAULT_MARGINS[metric]


# ------------------------------------------------------------------------------ the family
@dataclass
class _Test:
    """One test of the family while it is being judged."""

    metric: str
    variants: tuple[str, ...]
    margin: float
    claim: Claim | None = None
    groups: list[list[float]] | None = None  # values per variant (None: a variant has none)
    why: str = ""  # not tested: why
    contrast: Contrast | None = None
    p: float | None = None
    p_equivalence: float | None = None

    @property
    def signs(self) -> tuple[int, ...]:
        return (1, -1) if len(self.variants) == 2 else (1, -1, -1, 1)

    @property
    def n(self) -> list[int]:
        return [len(g) for g in self.groups] if self.groups else []


def _values(variant: dict[str, Any] | None, metric: str) -> dict[str, Any] | None:
    return None if variant is None else variant.get(metric)


def _why_not(test: _Test, by_name: dict[str, dict], smoke: bool) -> str:
    """Why `test` cannot be tested ("" when it can)."""
    summaries = [_values(by_name.get(name), test.metric) for name in test.variants]
    for name, summary in zip(test.variants, summaries, strict=True):
        if name not in by_name:
            return f"{name} has no finished runs"
        if summary is None:
            return f"no {words.WORDS[test.metric][0]} was measured for {name}"
    if smoke:
        return words.SMOKE
    counts = [(len(s["values"]), len(s["values"]) + s.get("missing", 0)) for s in summaries]
    if max(total for _, total in counts) <= 1:
        return "one seed per variant: no seed-to-seed spread to test against (use --seeds 3+)"
    for name, (n, total) in zip(test.variants, counts, strict=True):
        if n < 2:
            if test.metric.endswith("_to_target"):
                return f"{name} reached the target in {n} of {total} seeds"
            if test.metric.endswith("_at_matched_loss"):
                return f"{name} reached the matched training loss in {n} of {total} seeds"
            return f"{name} has a value in only {n} of {total} seeds"
    if all(np.ptp(s["values"]) == 0 for s in summaries):
        return (
            f"every run of {', '.join(dict.fromkeys(test.variants))} gave the same "
            f"{words.WORDS[test.metric][0]}: no seed-to-seed spread to test against"
        )
    if test.margin <= 0:
        return "no margin: the reference's mean is 0"
    return ""


def _family(definition: Definition, by_name: dict[str, dict]) -> list[_Test]:
    """The claims, then every pair × COMPARED metric that no claim already tests."""
    tests = [
        _Test(claim.metric, tuple(claim.variants), claim.effect, claim)
        for claim in definition.claims
    ]
    claimed = {(t.metric, frozenset(t.variants)) for t in tests if len(t.variants) == 2}
    for a, b in definition.pairs:
        for metric in COMPARED:
            if (metric, frozenset((a, b))) not in claimed:
                reference = _values(by_name.get(b), metric)
                tests.append(_Test(metric, (a, b), default_margin(metric, reference)))
    return tests


def _measure(test: _Test, by_name: dict[str, dict], smoke: bool) -> None:
    test.why = _why_not(test, by_name, smoke)
    summaries = [_values(by_name.get(name), test.metric) for name in test.variants]
    if all(s is not None and s["values"] for s in summaries):
        test.groups = [[float(v) for v in s["values"]] for s in summaries]
    if test.why:
        return
    test.contrast = welch(test.groups, test.signs)
    test.p = test.contrast.p()
    test.p_equivalence = test.contrast.p_equivalence(test.margin)


def _judged(
    test: _Test, p: float | None, p_eq: float | None, m: int, level: float | None
) -> dict[str, Any]:
    """The test as a `schema.Test` dict: its verdict, interval, power and sentence; an
    inconclusive test's `why` says what seeds would decide it."""
    record: dict[str, Any] = {
        "metric": test.metric,
        "variants": list(test.variants),
        "n": test.n,
        "estimate": None,
        **dict.fromkeys(("low", "high", "level", "p", "p_adjusted")),
        "margin": test.margin,
        **dict.fromkeys(("p_equivalence", "p_equivalence_adjusted")),
        "verdict": "not tested",
        **dict.fromkeys(("power", "detectable", "seeds_needed")),
    }
    if test.groups:
        means = [float(np.mean(g)) for g in test.groups]
        record["estimate"] = sum(s * x for s, x in zip(test.signs, means, strict=True))
    if test.contrast is not None:
        low, high = test.contrast.interval(level)
        found = power(test.groups, test.margin, ALPHA / m)
        record |= {
            "low": low,
            "high": high,
            "level": level,
            "p": test.p,
            "p_adjusted": p,
            "p_equivalence": test.p_equivalence,
            "p_equivalence_adjusted": p_eq,
            "power": found.power,
            "detectable": found.detectable,
            "seeds_needed": found.seeds_needed,
        }
        if p < ALPHA:
            record["verdict"] = "higher" if test.contrast.estimate > 0 else "lower"
        elif p_eq < ALPHA:
            record["verdict"] = "equivalent"
        else:
            record["verdict"] = "inconclusive"
            test.why = _undecided(test, record, found)
    record["sentence"] = words.sentence(record, test.why)
    return record


def _undecided(test: _Test, record: dict[str, Any], found: Power) -> str:
    """What an inconclusive test cannot tell, and the seeds per variant that would tell it:
    those for 80% power at ±margin, or, where these seeds already have it (the estimate lies
    between no effect and the margin), those for 80% power at the larger of the estimate's
    distances to 0 and to the margin, the narrower interval that deciding needs."""
    if found.seeds_needed is None or found.seeds_needed > max(test.n):
        return words.undecided(record, found.seeds_needed, near=False)
    estimate = abs(record["estimate"])
    distance = max(estimate, test.margin - estimate)
    return words.undecided(
        record, power(test.groups, distance, 1 - record["level"]).seeds_needed, near=True
    )


def _literature(expect: str, verdict: str) -> str:
    """agrees (the expected verdict), disagrees (the opposite direction; a difference where
    equivalence was expected; equivalence within the claim's smallest effect of interest
    where a difference was), inconclusive, not tested."""
    if verdict in ("not tested", "inconclusive"):
        return verdict
    return "agrees" if verdict == expect else "disagrees"


def _claimed(test: _Test, record: dict[str, Any]) -> dict[str, Any]:
    """The test as a `schema.ClaimResult` dict: the claim, its power, the literature check."""
    claim = test.claim
    literature = _literature(claim.expect, record["verdict"])
    clause = words.power_clause(record)
    return {
        **record,
        "sentence": f"{record['sentence']} {clause}".strip(),
        "name": claim.name,
        "statement": claim.statement,
        "anchor": claim.anchor,
        "expect": claim.expect,
        "literature": literature,
        "why": test.why if literature in ("not tested", "inconclusive") else "",
    }


def judge(
    definition: Definition, variants: list[dict[str, Any]], *, smoke: bool = False
) -> Judgement:
    """Test an experiment's claims and comparisons as one Holm-corrected family.

    Args:
        definition: its claims (each on its metric, margin = its effect), then its pairs (each
            on the COMPARED metrics with `default_margin`, unless a claim tests the same two
            variants on that metric).
        variants: `schema.VariantResult`-shaped dicts (each metric a Summary dict
            {mean, std, values, missing}, or None where not measured).
        smoke: a --quick run: every test is "not tested", and the answer says so.

    Returns:
        A `Judgement`: claims (ClaimResult dicts, in the definition's order), tests (Test
        dicts, the comparisons), answer (a plain sentence per claim), lines (a sentence per
        claim and test, then the accuracy ranking) and statistics ("how we know").
    """
    by_name = {v["name"]: v for v in variants}
    family = _family(definition, by_name)
    for test in family:
        _measure(test, by_name, smoke)
    tested = [i for i, t in enumerate(family) if t.contrast is not None]
    raw = [family[i].p for i in tested] + [family[i].p_equivalence for i in tested]
    adjusted = holm(raw)
    p_adjusted = dict(zip(tested, adjusted[: len(tested)], strict=True))
    p_eq_adjusted = dict(zip(tested, adjusted[len(tested) :], strict=True))
    levels = dict(zip(tested, holm_levels(raw, adjusted)[: len(tested)], strict=True))
    m = len(adjusted)
    records = [
        _judged(t, p_adjusted.get(i), p_eq_adjusted.get(i), m, levels.get(i))
        for i, t in enumerate(family)
    ]
    claims = [_claimed(t, r) for t, r in zip(family, records, strict=True) if t.claim]
    tests = [r for t, r in zip(family, records, strict=True) if not t.claim]
    if smoke:
        smoke_run = words.SMOKE[0].upper() + words.SMOKE[1:]
        answer = [f"{smoke_run}. Run it without --quick for an answer."]
        lines = [f"{smoke_run}; nothing was tested."]
    else:
        answer = [words.answer(c) for c in claims]
        lines = [c["sentence"] for c in claims] + [r["sentence"] for r in tests]
    best = words.ranking(variants, smoke)
    untested = sum(r["verdict"] == "not tested" for r in records)
    margins = {metric: DEFAULT_MARGINS[metric] for metric in COMPARED}
    statistics = words.how_we_know(m, claims, untested, smoke, margins)
    return Judgement(claims, tests, answer, lines + ([best] if best else []), statistics)
