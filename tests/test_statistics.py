"""Experiment statistics (issue 20): each number against an oracle (SciPy, statsmodels, a
direct computation), each verdict on data made to have it, the words a learner reads."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestIndPower

from digitlab.experiments import conclusions, schema
from digitlab.experiments.schema import Budget, Claim, Definition, Variant
from digitlab.experiments.statistics import (
    ALPHA,
    amount,
    format_p,
    judge,
    points,
    power,
    welch,
)


def summary(values, missing=0):
    """A `schema.Summary` dict, as results.variant_results writes it."""
    values = [float(v) for v in values]
    return {
        "mean": float(np.mean(values)) if values else None,
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "values": values,
        "missing": missing,
    }


def variant(name, accuracy, gap=None, **metrics):
    return {
        "name": name,
        "test_accuracy": summary(accuracy),
        "generalization_gap": summary(gap if gap is not None else accuracy),
        **metrics,
    }


def definition(names, claims=(), comparisons=()):
    return Definition(
        name="t",
        question="Does it help?",
        budget=Budget(epochs=1, train_samples=100, seeds=10),
        variants=[Variant(name=n) for n in names],
        comparisons=comparisons,
        claims=claims,
    )


def claim(variants, expect="higher", effect=0.005, metric="test_accuracy", name="c"):
    return Claim(
        name=name,
        statement="B helps",
        metric=metric,
        variants=variants,
        expect=expect,
        effect=effect,
    )


RNG = np.random.default_rng(20)
A, B = 0.95 + RNG.normal(0, 0.004, 7), 0.947 + RNG.normal(0, 0.002, 5)


# ------------------------------------------------------------------------------ oracles
def test_welch_difference_is_scipys_welch_test():
    contrast = welch([A, B], (1, -1))
    scipy = stats.ttest_ind(A, B, equal_var=False)
    assert contrast.estimate == pytest.approx(A.mean() - B.mean())
    assert contrast.p() == pytest.approx(scipy.pvalue, rel=1e-10)
    interval = scipy.confidence_interval(1 - ALPHA / 6)
    assert contrast.interval(1 - ALPHA / 6) == pytest.approx((interval.low, interval.high))


def test_tost_is_the_larger_of_two_one_sided_welch_tests():
    margin = 0.004
    above = stats.ttest_ind(A + margin, B, equal_var=False, alternative="greater").pvalue
    below = stats.ttest_ind(A - margin, B, equal_var=False, alternative="less").pvalue
    assert welch([A, B], (1, -1)).p_equivalence(margin) == pytest.approx(max(above, below))


def test_interaction_standard_error_and_df_are_welch_satterthwaites():
    groups = [[1.0, 3.0], [0.0, 0.0, 3.0, 3.0], [2.0, 2.5, 4.0], [1.0, 5.0]]
    shares = [2.0 / 2, 3.0 / 4, np.var([2.0, 2.5, 4.0], ddof=1) / 3, 8.0 / 2]  # s²/n
    se2 = sum(shares)
    df = se2**2 / sum(s**2 / (n - 1) for s, n in zip(shares, (2, 4, 3, 2), strict=True))
    contrast = welch(groups, (1, -1, -1, 1))
    assert contrast.estimate == pytest.approx((2.0 - 1.5) - (17 / 6 - 3.0))
    assert contrast.se == pytest.approx(math.sqrt(se2))
    assert contrast.df == pytest.approx(df)


def test_an_interaction_with_constant_reference_groups_is_the_pair_test():
    contrast = welch([A, B, [0.2, 0.2], [0.1, 0.1, 0.1]], (1, -1, -1, 1))
    scipy = stats.ttest_ind(A, B, equal_var=False)
    assert contrast.estimate == pytest.approx(A.mean() - B.mean() - 0.1)
    assert contrast.df == pytest.approx(scipy.df)
    shifted = welch([A - 0.1, B], (1, -1))  # the estimate moved by −0.1, as shifting a does
    assert contrast.p() == pytest.approx(shifted.p())


def test_power_is_ttestindpowers_at_the_margin_over_the_average_variance():
    a, b = RNG.normal(0, 0.004, 6), RNG.normal(0, 0.002, 6)
    sigma = math.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
    found = power([a, b], 0.0035, ALPHA / 8)
    expected = TTestIndPower().power(effect_size=0.0035 / sigma, nobs1=6, alpha=ALPHA / 8)
    assert found.power == pytest.approx(expected)
    detects = TTestIndPower().power(effect_size=found.detectable / sigma, nobs1=6, alpha=ALPHA / 8)
    assert detects == pytest.approx(0.8, abs=1e-6)
    n = found.seeds_needed
    at = [
        TTestIndPower().power(effect_size=0.0035 / sigma, nobs1=k, alpha=ALPHA / 8)
        for k in (n - 1, n)
    ]
    assert at[0] < 0.8 <= at[1]


def test_power_at_ten_seeds_matches_solve_power():
    a, b = RNG.normal(0, 1.0, 10), RNG.normal(0, 1.0, 10)
    sigma = math.sqrt((np.var(a, ddof=1) + np.var(b, ddof=1)) / 2)
    found = power([a, b], 1.0, 0.05)
    solved = TTestIndPower().solve_power(nobs1=10, alpha=0.05, power=0.8)
    assert found.detectable / sigma == pytest.approx(solved, rel=1e-6)


def test_power_with_two_seeds_at_a_small_alpha_still_solves():
    # statsmodels' solve_power returns an effect with 35% power here; ours has 80%
    a, b = [0.0, 1.0], [0.5, 1.5]
    found = power([a, b], 1.0, 0.00125)
    sigma = math.sqrt(0.5)
    check = TTestIndPower().power(
        effect_size=found.detectable / sigma, nobs1=2, alpha=0.00125 / 2, alternative="larger"
    )
    assert check == pytest.approx(0.8, abs=1e-6)


def test_an_interaction_needs_the_variance_of_four_means():
    groups = [RNG.normal(0, 1.0, 8) for _ in range(4)]
    variances = [np.var(g, ddof=1) for g in groups]
    found = power(groups, 0.5, 0.05)
    expected = TTestIndPower().power(
        effect_size=0.5 / math.sqrt(sum(variances) / 2), nobs1=8, alpha=0.05
    )
    assert found.power == pytest.approx(expected)
    assert found.power < power(groups[:2], 0.5, 0.05).power  # four noisy means, not two


def test_holm_runs_over_every_difference_and_equivalence_test():
    names = ["base", "x", "y"]
    variants = [
        variant("base", A, gap=B),
        variant("x", A + 0.01, gap=B + 0.05),
        variant("y", 0.95 + RNG.normal(0, 0.01, 5), gap=B),
    ]
    judged = judge(definition(names), variants)
    tested = [t for t in judged.tests if t["verdict"] != "not tested"]
    assert len(tested) == 4  # (x, y) × (accuracy, gap)
    raw = [t["p"] for t in tested] + [t["p_equivalence"] for t in tested]
    holm = multipletests(raw, alpha=ALPHA, method="holm")[1]
    adjusted = [t["p_adjusted"] for t in tested] + [t["p_equivalence_adjusted"] for t in tested]
    assert adjusted == pytest.approx(list(holm))
    levels = [t["level"] for t in tested]
    assert all(1 - ALPHA / 2 <= x <= 1 - ALPHA / 8 for x in levels)  # Holm steps: 8 p values


def test_each_interval_excludes_zero_exactly_when_its_holm_adjusted_test_rejects():
    from digitlab.experiments.statistics import holm_levels

    raw = [0.001, 0.004, 0.02, 0.03, 0.2, 0.5]
    adjusted = list(multipletests(raw, alpha=ALPHA, method="holm")[1])
    assert [p < ALPHA for p in adjusted] == [True, True, False, False, False, False]
    levels = holm_levels(raw, adjusted)  # step r: α/(6 − r + 1); the rest at step 3's
    assert levels == pytest.approx([1 - ALPHA / 6, 1 - ALPHA / 5] + [1 - ALPHA / 4] * 4)
    assert holm_levels(raw[::-1], adjusted[::-1]) == pytest.approx(levels[::-1])  # by rank
    names, seen = ["base", "x", "y", "z"], set()
    for shift in (0.002, 0.004, 0.006, 0.01):  # near the edge of deciding, and beyond
        variants = [variant("base", A, gap=B)] + [
            variant(n, A + shift * k + RNG.normal(0, 0.003, 7), gap=B + 0.001 * k)
            for k, n in enumerate(names[1:], start=1)
        ]
        for t in judge(definition(names), variants).tests:
            seen.add(t["verdict"])
            if t["verdict"] in ("higher", "lower"):
                assert t["low"] > 0 or t["high"] < 0, t
            elif t["verdict"] != "not tested":
                assert t["low"] <= 0 <= t["high"], t
    assert {"higher", "inconclusive"} <= seen  # both sides of the edge were judged


# ------------------------------------------------------------------------------ verdicts
def one_test(a, b, margin=0.005, smoke=False, metric="test_accuracy", extra=None):
    """The claim a vs b judged: its ClaimResult dict; `extra` adds metrics per variant."""
    extra = extra or {}
    claims = [claim(["a", "b"], effect=margin, metric=metric)]
    variants = [variant("a", a, **extra.get("a", {})), variant("b", b, **extra.get("b", {}))]
    judged = judge(definition(["a", "b"], claims=claims), variants, smoke=smoke)
    return judged.claims[0]


def test_a_clear_difference_is_higher_or_lower():
    base = 0.95 + RNG.normal(0, 0.002, 6)
    higher = one_test(base + 0.02, base)
    assert higher["verdict"] == "higher" and higher["low"] > 0
    assert higher["sentence"].startswith("a has a higher test accuracy than b: +2.00 points (")
    assert "Holm-adjusted p < 0.001" in higher["sentence"]
    assert one_test(base - 0.02, base)["verdict"] == "lower"


def test_tight_equal_groups_are_equivalent_within_the_margin():
    result = one_test(0.95 + RNG.normal(0, 0.0005, 10), 0.95 + RNG.normal(0, 0.0005, 10))
    assert result["verdict"] == "equivalent"
    assert "equivalent within ±0.50 points" in result["sentence"]
    assert result["low"] > -0.005 and result["high"] < 0.005


def test_wide_noisy_groups_are_inconclusive_and_say_what_seeds_would_decide():
    result = one_test(0.95 + RNG.normal(0, 0.01, 4), 0.95 + RNG.normal(0, 0.01, 4))
    assert result["verdict"] == "inconclusive" and result["literature"] == "inconclusive"
    assert result["seeds_needed"] > 4
    assert f"about {result['seeds_needed']:,} seeds per variant would decide it" in result["why"]
    assert "spans the ±0.50-point margin" in result["sentence"]
    assert "no measurable difference" not in result["sentence"]


def test_an_estimate_halfway_to_the_margin_asks_for_more_seeds_than_the_margins_power():
    z = np.random.default_rng(5).normal(0, 1, 10)
    z = (z - z.mean()) / z.std(ddof=1)
    spread = 0.005 / 4.0 / math.sqrt(2 / 10)  # the margin is 4 standard errors
    result = one_test(0.9525 + spread * z[::-1], 0.95 + spread * z)  # +0.25 points
    assert result["verdict"] == "inconclusive"
    assert result["seeds_needed"] <= 10 and result["power"] >= 0.8  # powered for ±margin ...
    assert "with the estimate between no effect and the margin" in result["why"]
    seeds = int(re.search(r"about ([0-9,]+) seeds per variant", result["why"])[1])
    assert seeds > 10  # ... but deciding +0.25 points needs more


@pytest.mark.parametrize(
    ("a", "b", "extra", "smoke", "why"),
    [
        ([0.99], [0.90], {}, False, "one seed per variant"),
        ([0.95, 0.95, 0.95], [0.93, 0.93], {}, False, "every run of a, b gave the same"),
        (A, B, {}, True, "a smoke run (--quick): too small to conclude anything"),
    ],
)
def test_what_cannot_be_tested_says_why(a, b, extra, smoke, why):
    result = one_test(a, b, smoke=smoke, extra=extra)
    assert result["verdict"] == "not tested" and result["literature"] == "not tested"
    assert result["p"] is None and result["power"] is None
    assert why in result["why"] and why in result["sentence"]


def test_a_target_never_reached_is_not_tested_and_says_in_how_many_seeds():
    reached = {"updates_to_target": summary([100.0, 120.0, 90.0])}
    never = {"updates_to_target": summary([], missing=10)}
    extra = {"a": reached, "b": never}
    result = one_test(A, B, margin=10, metric="updates_to_target", extra=extra)
    assert result["verdict"] == "not tested"
    assert result["why"] == "b reached the target in 0 of 10 seeds"


def test_a_smoke_run_answers_that_it_is_one():
    judged = judge(
        definition(["a", "b"], claims=[claim(["a", "b"])]),
        [variant("a", A), variant("b", B)],
        smoke=True,
    )
    assert judged.answer[0].startswith("A smoke run (--quick): too small to conclude anything")
    assert judged.lines[0].startswith("A smoke run")
    assert "(not a finding)" in judged.lines[-1]
    assert all(t["verdict"] == "not tested" for t in [*judged.claims, *judged.tests])


# ------------------------------------------------------------------------------ literature
TIGHT = 0.95 + RNG.normal(0, 0.0005, 10)


@pytest.mark.parametrize(
    ("a", "expect", "literature", "answer"),
    [
        (TIGHT + 0.02, "higher", "agrees", "B helps: yes, by 2.00 points here."),
        (TIGHT + 0.02, "lower", "disagrees", "B helps: not here, it went the other way; a has"),
        (TIGHT + 0.02, "equivalent", "disagrees", "B helps: not here; a has a higher"),
        (TIGHT, "equivalent", "agrees", "B helps: yes, the difference here is under 0.50"),
        (TIGHT, "higher", "disagrees", "B helps: not at this scale; any difference here is"),
    ],
)
def test_literature_check_follows_the_verdict(a, expect, literature, answer):
    claims = [claim(["a", "b"], expect=expect)]
    judged = judge(definition(["a", "b"], claims=claims), [variant("a", a), variant("b", TIGHT)])
    assert judged.claims[0]["literature"] == literature
    assert judged.answer[0].startswith(answer)


def test_an_inconclusive_answer_gives_the_bound_in_plain_words():
    noisy = [0.95 + RNG.normal(0, 0.01, 4), 0.95 + RNG.normal(0, 0.01, 4)]
    judged = judge(
        definition(["a", "b"], claims=[claim(["a", "b"])]),
        [variant("a", noisy[0]), variant("b", noisy[1])],
    )
    result = judged.claims[0]
    bound = amount("test_accuracy", result["high"], signed=False)
    assert judged.answer == [
        f"B helps: too small for 4 seeds to see; if the effect exists, it is under {bound}."
    ]
    assert "p =" not in judged.answer[0] and "p <" not in judged.answer[0]


# ------------------------------------------------------------------------------ the whole
def test_judge_tests_claims_then_comparisons_once_each():
    names = ["n0", "n5", "w0", "w5"]
    variants = [  # dropout narrows both gaps, and helps the wide net's accuracy 1.9 points more
        variant(n, 0.95 + shift + RNG.normal(0, 0.001, 6), gap=gap + RNG.normal(0, 0.01, 6))
        for n, shift, gap in [
            ("n0", 0, 0.3),
            ("n5", 0.001, 0.22),
            ("w0", 0.01, 0.4),
            ("w5", 0.03, 0.34),
        ]
    ]
    claims = [
        claim(["n5", "n0"], expect="lower", effect=0.02, metric="generalization_gap", name="gap"),
        claim(["w5", "w0", "n5", "n0"], effect=0.0035, name="interaction"),
    ]
    judged = judge(definition(names, claims, comparisons=[("n5", "n0"), ("w5", "w0")]), variants)
    assert [c["name"] for c in judged.claims] == ["gap", "interaction"]
    assert [c["verdict"] for c in judged.claims] == ["lower", "higher"]
    compared = [(tuple(t["variants"]), t["metric"]) for t in judged.tests]
    assert compared == [  # (n5, n0) on the gap is the claim's, not tested twice
        (("n5", "n0"), "test_accuracy"),
        (("w5", "w0"), "test_accuracy"),
        (("w5", "w0"), "generalization_gap"),
    ]
    for result in judged.claims:
        schema.ClaimResult.model_validate(result)
    for test in judged.tests:
        schema.Test.model_validate(test)
    means = {v["name"]: v["test_accuracy"]["mean"] for v in variants}
    interaction = judged.claims[1]
    estimate = (means["w5"] - means["w0"]) - (means["n5"] - means["n0"])
    assert interaction["estimate"] == pytest.approx(estimate)
    assert interaction["sentence"].startswith(
        f"w5 − w0 exceeds n5 − n0 in test accuracy: {points(estimate)} (99.5% CI "
    )
    assert len(judged.lines) == 2 + 3 + 1 and judged.lines[-1].startswith("Mean test accuracy")
    assert "Holm-adjusted (Holm 1979)" in judged.statistics
    assert "All 10 p-values" in judged.statistics and "99.5% (1 − 0.05/10)" in judged.statistics
    assert "Power of the claims at their declared effects: gap " in judged.statistics
    assert judged.answer[1] == f"B helps: yes, by {points(estimate, signed=False)} here."


def test_a_variant_without_runs_is_not_tested():
    judged = judge(definition(["a", "b"]), [variant("b", B)])
    assert {t["verdict"] for t in judged.tests} == {"not tested"}
    assert (
        judged.tests[0]["sentence"] == "b vs a, test accuracy: not tested: a has no finished runs."
    )


# ------------------------------------------------------------------------------ words
@pytest.mark.parametrize(
    ("p", "text"),
    [
        (0.0, "p < 0.001"),
        (1e-12, "p < 0.001"),
        (0.00099, "p < 0.001"),
        (0.001, "p = 0.001"),
        (0.0123, "p = 0.012"),
        (1.0, "p = 1.000"),
    ],
)
def test_format_p_never_prints_zero(p, text):
    assert format_p(p) == text
    assert "0.000" not in format_p(p)


def test_units_per_metric():
    assert points(0.006) == "+0.60 points"
    assert points(-0.0141) == "−1.41 points"
    assert amount("generalization_gap", -0.0862) == "−0.086"
    assert amount("updates_to_target", 1200.4) == "+1,200 updates"
    assert amount("epochs_to_target", 1.5, signed=False) == "1.5 epochs"
    assert amount("seconds_to_target", -3.21) == "−3.2 s"
    assert conclusions.percent(1 - 0.05 / 8) == "99.4%" and conclusions.percent(0.95) == "95%"


def test_statistics_imports_without_keras_or_statsmodels():
    code = (
        "import sys, digitlab.experiments.statistics; "
        "print(sorted({'keras', 'jax', 'statsmodels'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
