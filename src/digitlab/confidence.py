"""Honest confidence: is the answer a confident digit, a close call, or not a digit at all?

Softmax always picks a class, so a scribble gets "8, 100%". Every prediction here carries a
verdict from one function, `judge`, which the CLI, `digitlab.predict`, `POST /predict` and the
drawing page all reach through `verdicts`:

- `confidence`: the top class probability;
- `confident`: False when the answer should not be trusted, None for a run without
  calibrated thresholds (older runs: `digitlab calibrate RUN` adds them);
- `reason`: `"unsure"` (the top two classes are close) or `"not a digit"` (the image is far
  from every digit the run was trained on), None when confident.

Two scores, chosen by measurement (`benchmarks/bench_ood.py`, `benchmarks/RESULTS.md`):

- **unsure**: the margin between the top two probabilities. It catches two-digits-close
  answers but barely any non-digit: a network trained on digits is as sure of a letter.
- **not a digit**: a reconstruction check in pixel space. For each class, the 20 main
  directions (PCA) of its training digits are fitted once; an image's score is its distance
  from the span of the predicted class's directions. A letter, a scribble or noise read as
  a "3" is far from every real 3. It measured better than the maximum softmax probability,
  the energy score and the Mahalanobis distance on the last hidden layer, alone or combined.

Both thresholds are calibrated on real digits the network did not train on: the run's
validation split when it has one, else the first half of the test split (the second half
stays for measuring). Each flags at most 1% of the correctly classified calibration digits,
so at most 2% in all. This module computes them; the run keeps them
(`Run.store_calibration`: the thresholds in `RunConfig.thresholds`, the class directions in a
file beside it, read back by `Run.confidence_stats`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from digitlab import conformal
from digitlab.data import PIXEL_MAX
from digitlab.errors import RunError

COMPONENTS = 20  # PCA directions per class
FIT_PER_CLASS = 4000  # training digits per class the directions are fitted on
FLAG_RATE = 0.01  # each score flags at most this fraction of correct calibration digits
UNSURE, NOT_A_DIGIT = "unsure", "not a digit"
MARGIN, RESIDUAL = "unsure_margin", "not_a_digit_residual"


# --------------------------------------------------------------------------------- the stats
def fit_stats(images: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Per class: the mean training image and its `COMPONENTS` main directions (PCA).

    The directions are the top eigenvectors of each class's 784×784 covariance (the same
    span as the SVD of its centred digits, at a tenth of the cost: ~0.5 s for ten classes).
    """
    labels = np.asarray(labels)
    means, components = [], []
    for c in range(num_classes):
        xc = _flat(images[np.flatnonzero(labels == c)[:FIT_PER_CLASS]])
        if len(xc) == 0:
            raise RunError(f"class {c} has no training digits to calibrate on")
        mean = xc.mean(axis=0)
        centred = xc - mean
        _, vectors = np.linalg.eigh((centred.T @ centred).astype(np.float64))
        top = np.zeros((COMPONENTS, xc.shape[1]))
        k = min(COMPONENTS, len(xc))
        top[:k] = vectors[:, ::-1][:, :k].T  # eigh sorts ascending: the largest come last
        means.append(mean)
        components.append(top)
    return {
        "means": np.stack(means).astype(np.float32),
        "components": np.stack(components).astype(np.float32),
    }


def residuals(stats: dict[str, np.ndarray], images: np.ndarray, predicted: np.ndarray):
    """Each image's distance (0–1 pixels) from its predicted class's PCA span."""
    x = _flat(images)
    predicted = np.asarray(predicted)
    out = np.empty(len(x), dtype=np.float64)
    for c in np.unique(predicted):  # one matrix product per class, not a basis per image
        rows = np.flatnonzero(predicted == c)
        centred = x[rows] - stats["means"][c]
        basis = stats["components"][c]  # k×D, orthonormal rows
        out[rows] = np.linalg.norm(centred - (centred @ basis.T) @ basis, axis=1)
    return out


def margins(probabilities: np.ndarray) -> np.ndarray:
    """Top probability minus the second, per row."""
    top2 = np.sort(np.asarray(probabilities, dtype=np.float64), axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def _flat(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(PIXEL_MAX)


# --------------------------------------------------------------------------------- calibrate
def calibrate(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    train: tuple[np.ndarray, np.ndarray],
    calibration: tuple[np.ndarray, np.ndarray],
    num_classes: int,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Fit the class directions on `train` and the thresholds on `calibration` digits.

    Args:
        predict_proba: uint8 N×H×W → N×classes probabilities (`Run.predict_proba`).
        train: (images, labels) the network trained on; the PCA directions come from these.
        calibration: (images, labels) it did not train on; each threshold flags at most
            `FLAG_RATE` of those it classifies correctly.

    Returns:
        The thresholds for `RunConfig.thresholds` and the class directions (`means`,
        `components`), both for `Run.store_calibration`.
    """
    stats = fit_stats(*train, num_classes)
    images, labels = calibration
    probabilities = predict_proba(images)
    predicted = probabilities.argmax(axis=1)
    correct = predicted == np.asarray(labels)
    if correct.sum() < 100:
        raise RunError(
            f"only {int(correct.sum())} correctly classified calibration digits; "
            "calibrating needs at least 100"
        )
    every = residuals(stats, images, predicted)
    thresholds = {
        MARGIN: float(np.quantile(margins(probabilities)[correct], FLAG_RATE)),
        RESIDUAL: float(np.quantile(every[correct], 1 - FLAG_RATE)),
        "calibration_digits": float(len(labels)),
    }
    confident = judge(probabilities, thresholds, every)[1]
    thresholds["flagged_correct_calibration"] = round(float(np.mean(~confident[correct])), 6)
    thresholds |= conformal.calibrate(probabilities, labels, confident)
    return thresholds, stats


def calibration_split(
    x_train: np.ndarray,
    y_train: np.ndarray,
    test: tuple[np.ndarray, np.ndarray],
    validation_split: float,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(training digits, calibration digits) as a run saw them.

    With a validation split, calibration uses it (the last fraction of the training digits,
    as `fit` splits them) and the rest is training. Without one, every training digit was
    trained on, so calibration uses the first half of the test split; the second half is
    what `benchmarks/bench_ood.py` measures on.
    """
    if validation_split:
        at = int(np.floor(len(x_train) * (1.0 - validation_split)))
        return (x_train[:at], y_train[:at]), (x_train[at:], y_train[at:])
    half = len(test[1]) // 2
    return (x_train, y_train), (test[0][:half], test[1][:half])


# ------------------------------------------------------------------------------------- judge
def judge(
    probabilities: np.ndarray,
    thresholds: dict[str, float],
    residual: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None, list[str | None]]:
    """The verdict for each row of probabilities: the one rule everyone applies.

    Args:
        probabilities: N×classes, rows summing to 1.
        thresholds: a run's calibrated thresholds (`Run.thresholds`); {} for an old run.
        residual: each image's `residuals` score; needed when thresholds are given.

    Returns:
        (confidence, confident, reason): the top probabilities; a boolean array, or None
        when there are no thresholds; per row `"not a digit"`, `"unsure"` or None.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    if MARGIN not in thresholds or RESIDUAL not in thresholds or residual is None:
        return confidence, None, [None] * len(probabilities)
    not_digit = np.asarray(residual) > thresholds[RESIDUAL]
    unsure = margins(probabilities) < thresholds[MARGIN]
    reasons = [
        NOT_A_DIGIT if far else UNSURE if close else None
        for far, close in zip(not_digit, unsure, strict=True)
    ]
    return confidence, ~(not_digit | unsure), reasons


def verdicts(run: Any, images: np.ndarray, probabilities: np.ndarray) -> list[dict[str, Any]]:
    """`{"confidence", "confident", "reason", "prediction_set"}` per image for a `Run`'s
    predictions.

    `images` are the uint8 N×H×W the network read; `probabilities` its answers. A run without
    thresholds gets `confident`, `reason` and `prediction_set` None; one calibrated before
    prediction sets existed gets `prediction_set` None (`conformal.prediction_sets`).
    """
    thresholds = run.thresholds
    residual = None
    if MARGIN in thresholds and RESIDUAL in thresholds:
        stats = run.confidence_stats()
        residual = residuals(stats, images, np.asarray(probabilities).argmax(axis=1))
    confidence, confident, reasons = judge(probabilities, thresholds, residual)
    sets = conformal.prediction_sets(probabilities, confident, thresholds)
    return [
        {
            "confidence": round(float(confidence[i]), 6),
            "confident": None if confident is None else bool(confident[i]),
            "reason": reasons[i],
            "prediction_set": None if sets is None else sets[i],
        }
        for i in range(len(confidence))
    ]


def calibrate_run(run: Any, data_dir: str | Path | None = None) -> dict[str, float]:
    """Calibrate a run's thresholds on the digits it saw and store them with the run
    (`Run.store_calibration`, atomically). Returns the thresholds.

    Raises:
        RunError: confidence.npz or config.json can't be replaced (a folder, a FIFO), said
            before any work.
    """
    from digitlab.data import load_dataset
    from digitlab.runs.folder import CONFIG_FILE, STATS_FILE, check_replaceable

    check_replaceable(run.path, STATS_FILE, CONFIG_FILE, doing="calibration")
    (x_train, y_train), test = load_dataset(run.dataset.name, data_dir=data_dir)
    train_samples = run.spec.train.train_samples
    if train_samples is not None:
        x_train, y_train = x_train[:train_samples], y_train[:train_samples]
    train, held_out = calibration_split(x_train, y_train, test, run.spec.train.validation_split)
    thresholds, stats = calibrate(run.predict_proba, train, held_out, len(run.class_names))
    run.store_calibration(thresholds, stats)
    return thresholds


def calibration_message(run_name: str, thresholds: dict[str, float]) -> str:
    """The line `digitlab calibrate` prints: on how many digits, both thresholds, and the
    share of correct answers they flag."""
    flagged = thresholds["flagged_correct_calibration"]
    return (
        f"calibrated {run_name} on {int(thresholds['calibration_digits'])} held-out digits: "
        f"unsure below a top-two margin of {thresholds['unsure_margin']:.3f}, not a digit "
        f"above a reconstruction distance of {thresholds['not_a_digit_residual']:.2f}; "
        f"{flagged:.1%} of the correctly classified ones flagged; prediction sets hold the "
        f"true digit {thresholds['set_coverage']:.0%} of the time"
    )
