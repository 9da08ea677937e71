"""Prediction sets: the digits that hold the true one with 95% probability ("4 or 9").

Split conformal prediction (Angelopoulos & Bates 2021, "A gentle introduction to conformal
prediction", https://arxiv.org/abs/2107.07511) with the RAPS score (Angelopoulos, Bates,
Malik & Jordan 2021, https://arxiv.org/abs/2009.14193), not randomised, so that an image
always gets the same set:

- an image's classes are ranked from the most probable down; the score of the class at
  place r is the probability of the classes down to it, plus `PENALTY` × (r − `K_REG`) past
  place `K_REG` (the penalty keeps a long tail of tiny probabilities out of the sets);
- on digits the network did not train on (the run's calibration digits), `quantile` is the
  ⌈(n+1)(1−α)⌉-th smallest score of the true class;
- a new image's set is every class whose score *before* it (the classes above it) is at
  most that quantile: the most probable class is always in, and the true class is in
  whenever its own score is at most the quantile.

If the calibration digits and a new digit are exchangeable (drawn alike), the set holds the
true digit with probability at least 1−α (`COVERAGE`, 95%); not randomising only adds to it.
The quantile is computed apart for the answers the verdict calls confident and for the
others (Mondrian conformal prediction, Vovk, Gammerman & Shafer 2005, ch. 4): "a set shown
with a doubtful answer holds the true digit 95% of the time" is then a claim about doubtful
answers, not an average carried by the easy ones. A confident answer's set is its digit
alone whenever its group was right at least 95% of the time in calibration.

For digits unlike the calibration digits (corruptions, another hand) nothing is guaranteed;
`benchmarks/bench_verdict.py` measures the sets there. The verdict's own thresholds come
from the same calibration digits, which makes the groups depend on them a little (an O(1/n)
effect); tests/test_confidence_sets.py checks the coverage on held-out digits.
"""

from __future__ import annotations

import math

import numpy as np

COVERAGE = 0.95  # the default 1 − α
PENALTY = 1.0  # RAPS's λ: chosen by measurement (benchmarks/RESULTS.md, prediction sets)
K_REG = 1  # RAPS's k_reg: the places free of the penalty
QUANTILE_KEYS = {True: "set_quantile_confident", False: "set_quantile_not_confident"}


def scores(probabilities: np.ndarray, penalty: float = PENALTY, k_reg: int = K_REG):
    """Each row's classes from the most probable down (N×K), the RAPS score of each place
    (N×K) and the score before it (the classes above it, N×K)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    order = np.argsort(-probabilities, axis=1, kind="stable")
    ranked = np.take_along_axis(probabilities, order, axis=1)
    regulariser = penalty * np.maximum(np.arange(1, ranked.shape[1] + 1) - k_reg, 0)
    through = np.cumsum(ranked, axis=1) + regulariser
    return order, through, through - ranked


def true_scores(probabilities: np.ndarray, labels: np.ndarray, **raps) -> np.ndarray:
    """The RAPS score of each image's true class (`raps`: `penalty`, `k_reg`)."""
    order, through, _ = scores(probabilities, **raps)
    place = np.argmax(order == np.asarray(labels)[:, None], axis=1)
    return through[np.arange(len(order)), place]


def quantile(values: np.ndarray, coverage: float, most: float) -> float:
    """The ⌈(n+1)·coverage⌉-th smallest value; `most` when there are too few to reach it
    (the set is then every class, which holds the true one for certain)."""
    rank = math.ceil((len(values) + 1) * coverage)
    return float(most) if rank > len(values) else float(np.sort(values)[rank - 1])


def calibrate(
    probabilities: np.ndarray,
    labels: np.ndarray,
    confident: np.ndarray,
    coverage: float = COVERAGE,
    penalty: float = PENALTY,
    k_reg: int = K_REG,
) -> dict[str, float]:
    """The quantiles of each group (confident, not) on calibration digits.

    Args:
        probabilities: N×K, the network's answers for digits it did not train on.
        labels: their true classes.
        confident: the verdict's `confident` for each (`confidence.judge`).
        coverage: 1 − α, the share of sets that must hold the true class.

    Returns:
        The entries `RunConfig.thresholds` keeps: `set_coverage`, `set_penalty`,
        `set_k_reg` and a quantile per group (`QUANTILE_KEYS`).
    """
    raps = {"penalty": penalty, "k_reg": k_reg}
    true = true_scores(probabilities, labels, **raps)
    every = 1.0 + penalty * max(probabilities.shape[1] - k_reg, 0)  # the largest score
    confident = np.asarray(confident, dtype=bool)
    out = {"set_coverage": coverage, "set_penalty": penalty, "set_k_reg": float(k_reg)}
    for group, key in QUANTILE_KEYS.items():
        out[key] = quantile(true[confident == group], coverage, every)
    return out


def prediction_sets(
    probabilities: np.ndarray, confident: np.ndarray, thresholds: dict[str, float]
) -> list[list[int]] | None:
    """Each image's set of classes, most probable first; None for a run without quantiles
    (calibrated before prediction sets: `digitlab calibrate RUN` adds them)."""
    if confident is None or any(key not in thresholds for key in QUANTILE_KEYS.values()):
        return None
    raps = {"penalty": thresholds["set_penalty"], "k_reg": int(thresholds["set_k_reg"])}
    order, _, before = scores(probabilities, **raps)
    limit = np.where(
        np.asarray(confident, dtype=bool),
        thresholds[QUANTILE_KEYS[True]],
        thresholds[QUANTILE_KEYS[False]],
    )
    inside = before <= limit[:, None]  # the top class's 0 is below any quantile: always in
    return [row[keep].tolist() for row, keep in zip(order, inside, strict=True)]


def in_words(prediction_set: list[int], class_names: list[str]) -> str:
    """A set as a person says it: "4", "4 or 9", "4, 7 or 9", "any of the 10"."""
    names = [class_names[c] for c in prediction_set]
    if len(names) == len(class_names) and len(names) > 2:
        return f"any of the {len(names)}"
    if len(names) <= 1:
        return "".join(names)
    return f"{', '.join(names[:-1])} or {names[-1]}"
