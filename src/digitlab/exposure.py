"""Outlier exposure in a network's own training: it sees things that are not digits, too.

Hendrycks, Mazeika & Dietterich 2019 (https://arxiv.org/abs/1812.04606): a classifier
trained only on its classes has no notion of anything else, and answers a letter or a
scribble as confidently as a digit. Trained also on images that are none of its classes,
each toward the uniform distribution (cross-entropy to 1/classes for every class, which is
the paper's loss), it learns to spread its probability over them, so the verdict's margin
flags them. `digitlab train --outlier-exposure SHARE` adds SHARE non-digits per training
digit, made by `outliers.not_digits` (the kinds the verifier learns "not a digit" from:
never a letter or a font, which `benchmarks/bench_ood.py` keeps for measuring), from the
run's seed, so the same seed gives the same examples.

The validation digits stay digits: the non-digits join the training part only, after the
split `fit` would make. The targets are one-hot for the digits and 1/classes for the
others, so the loss is compiled in its one-hot form and the metrics count digits only
(`model.compile_model`). No preset has it on: benchmarks/RESULTS.md, "Outlier exposure",
measured it raising the non-digits `fast` flags from 75.8 to 83.8% while the network learned
to spread its probability over blurred, speckled and faint digits too (glass blur read 57 →
10%); with `RandomDegradation`'s digits among the digits that cost vanished, and so did the
gain (within a point, `fast` and `cnn-robust`).
"""

from __future__ import annotations

import numpy as np

from digitlab import fastfit, outliers
from digitlab.schema import TrainConfig

SEED_OFFSET = 7919  # the non-digits' seed is the run's plus this: not the verifier's (0)


def fit_data(
    x: np.ndarray, y: np.ndarray, train: TrainConfig
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray] | None]:
    """What `fastfit.fit` trains on: (inputs, targets, validation data or None).

    Args:
        x: the training digits as the network takes them (uint8, N×784 or N×28×28×1).
        y: their targets: integer labels, or one-hot rows (always, with outlier exposure).
        train: the run's training config; without `outlier_exposure`, x and y are returned
            as they are and `fastfit.fit` splits off the validation digits itself.
    """
    if not train.outlier_exposure:
        return x, y, None
    x_fit, y_fit, validation = fastfit.split(x, y, train.validation_split)
    digits = x_fit.reshape((-1, *outliers.FRAME))
    labels = np.argmax(y_fit, axis=1)
    made = outliers.not_digits(
        round(len(x_fit) * train.outlier_exposure),
        digits,
        labels,
        seed=train.seed + SEED_OFFSET,
    )
    others = np.concatenate(list(made.values())).reshape((-1, *x.shape[1:]))
    classes = y.shape[1]
    uniform = np.full((len(others), classes), 1 / classes, np.float32)
    return np.concatenate([x_fit, others]), np.concatenate([y_fit, uniform]), validation
