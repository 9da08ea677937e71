"""Prediction sets (issue 22): split conformal, apart for confident and other answers, hold
the true class as often as promised, within their sampling error."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from digitlab import conformal


def synthetic(n: int, rng: np.random.Generator, classes: int = 10):
    """A stand-in network's answers: probabilities peaked on the true class by a random
    amount, so some answers are sure, some close calls and some wrong."""
    labels = rng.integers(0, classes, n)
    logits = rng.normal(0, 1.0, (n, classes))
    logits[np.arange(n), labels] += rng.exponential(5.0, n)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    confident = conformal.scores(probabilities)[1][:, 0] > 0.8  # the top probability
    return probabilities, labels, confident


def covered(sets: list[list[int]], labels: np.ndarray) -> np.ndarray:
    return np.array([label in chosen for chosen, label in zip(sets, labels, strict=True)])


def lowest_plausible(m: int, n: int, coverage: float, p: float = 0.001) -> int:
    """The fewest of m new points a set calibrated on n exchangeable points holds, but for
    a chance of `p`: their count is beta-binomial, a = ⌈(n+1)·coverage⌉, b = n + 1 − a
    (Angelopoulos & Bates 2021, section 3.2), and not randomising only adds to it."""
    a = math.ceil((n + 1) * coverage)
    return int(stats.betabinom(m, a, n + 1 - a).ppf(p))


def test_sets_hold_the_true_class_as_often_as_promised_in_each_group():
    rng = np.random.default_rng(0)
    probabilities, labels, confident = synthetic(2000, rng)
    quantiles = conformal.calibrate(probabilities, labels, confident)
    new_probabilities, new_labels, new_confident = synthetic(20000, rng)
    sets = conformal.prediction_sets(new_probabilities, new_confident, quantiles)
    hit = covered(sets, new_labels)
    for group in (True, False):
        n, m = int((confident == group).sum()), int((new_confident == group).sum())
        assert n > 100 and m > 1000  # both groups are measured
        held = int(hit[new_confident == group].sum())
        assert held >= lowest_plausible(m, n, conformal.COVERAGE), (group, held / m)
    sizes = np.array([len(s) for s in sets])
    assert sizes[new_confident].mean() < sizes[~new_confident].mean()  # doubt widens the set
    assert sizes.mean() < 5  # not every class: the sets say something


def test_a_set_is_never_empty_and_lists_the_most_probable_first():
    rng = np.random.default_rng(1)
    probabilities, labels, confident = synthetic(500, rng)
    sets = conformal.prediction_sets(
        probabilities, confident, conformal.calibrate(probabilities, labels, confident)
    )
    for row, chosen in zip(probabilities, sets, strict=True):
        assert chosen and chosen[0] == int(row.argmax())
        assert list(np.sort(row[chosen])[::-1]) == list(row[chosen])


def test_lower_coverage_gives_smaller_sets():
    rng = np.random.default_rng(2)
    probabilities, labels, confident = synthetic(3000, rng)
    sizes = {}
    for coverage in (0.8, 0.95, 0.99):
        quantiles = conformal.calibrate(probabilities, labels, confident, coverage=coverage)
        sets = conformal.prediction_sets(probabilities, confident, quantiles)
        sizes[coverage] = np.mean([len(s) for s in sets])
    assert sizes[0.8] < sizes[0.95] < sizes[0.99]


def test_a_group_too_small_to_calibrate_gets_every_class():
    probabilities = np.full((5, 10), 0.1)
    probabilities[:, 3] = 0.19
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    labels = np.full(5, 3)
    confident = np.array([True, True, True, True, False])  # 1 doubtful: ⌈2 × 0.95⌉ = 2 > 1
    quantiles = conformal.calibrate(probabilities, labels, confident)
    sets = conformal.prediction_sets(probabilities[:1], np.array([False]), quantiles)
    assert sorted(sets[0]) == list(range(10))


def test_a_run_without_quantiles_has_no_sets():
    probabilities = np.eye(10)[:3]
    assert conformal.prediction_sets(probabilities, np.ones(3, bool), {}) is None
    assert conformal.prediction_sets(probabilities, None, {"set_coverage": 0.95}) is None


@pytest.mark.parametrize(
    ("chosen", "words"),
    [([4], "4"), ([4, 9], "4 or 9"), ([4, 7, 9], "4, 7 or 9"), (list(range(10)), "any of the 10")],
)
def test_a_set_in_words(chosen, words):
    assert conformal.in_words(chosen, [str(d) for d in range(10)]) == words
