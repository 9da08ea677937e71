"""Honest confidence: is the answer a confident digit, a close call, or not a digit at all?

Softmax always picks a class, so a scribble gets "8, 100%". Every prediction here carries a
verdict from one function, `judge`, which the CLI, `digitlab.predict`, `POST /predict` and the
drawing page all reach through `verdicts`:

- `confidence`: the top class probability (the network's own number, not a guarantee);
- `confident`: False when the answer should not be trusted, None for a run without
  calibrated thresholds (older runs: `digitlab calibrate RUN` adds them);
- `reason`: `"unsure"` (a close call, or a second network disagrees) or `"not a digit"`
  (the image is unlike every digit the run learned from), None when confident;
- `prediction_set`: the digits that hold the true one with 95% probability
  (`digitlab.conformal`).

Four scores, chosen by measurement (`benchmarks/bench_verdict.py`, `benchmarks/RESULTS.md`,
"The verdict under shift"):

- **unsure**: the margin between the run's top two probabilities;
- **unsure**: the run's *verifier* (`digitlab.verifiers`: two small networks trained with
  the run, their probabilities averaged) gives the run's answer little probability: networks
  built differently rarely make the same confident mistake, on a corrupted digit or another
  hand;
- **unsure**: the run's *companion* (`digitlab.companion`: the `mlp-robust` preset's
  network, trained on the run's digits distorted and degraded) gives the run's answer little
  probability: it reads a rotated, blurred or broken digit that the run misreads;
- **not a digit**: the verifier's probability of its extra class, "not a digit", learned by
  outlier exposure (Hendrycks et al. 2019) from Fashion-MNIST and synthetic strokes, glyphs
  of random straight strokes, blobs, textures, noise, overlapping and turned digits; never
  from letters or the fonts `benchmarks/bench_ood.py` measures with.

Each threshold is calibrated on real digits by writers the network never saw: the first
half of the test split (the second half stays for measuring). Each flags at most its
`FLAG_RATES` share of the correctly classified calibration digits, 3% in all. This module
computes them; the run keeps them (`Run.store_calibration`: the thresholds in
`RunConfig.thresholds`, the verifiers' and companion's weights in a file beside it, read
back by `Run.confidence_stats`). Runs calibrated before issue 22 keep their "not a digit"
check, a distance from the predicted class's 20 main PCA directions (`residuals`), until
`digitlab calibrate RUN` replaces it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from digitlab import companion, conformal, outliers, verifiers
from digitlab.background import level_background, levels_background
from digitlab.data import DEFAULT_DATASET, PIXEL_MAX
from digitlab.errors import RunError

UNSURE, NOT_A_DIGIT = "unsure", "not a digit"
MARGIN = "unsure_margin"  # flags a top-two margin below it
DISAGREE = "unsure_verifier"  # flags a verifier probability of the answer below 1 − it
OTHER = "not_a_digit_verifier"  # flags a verifier "not a digit" probability above it
COMPANION = "unsure_companion"  # flags a companion probability of the answer below 1 − it
RESIDUAL = "not_a_digit_residual"  # runs calibrated before issue 22: a PCA distance above it
REASONS = {DISAGREE: UNSURE, OTHER: NOT_A_DIGIT, COMPANION: UNSURE, RESIDUAL: NOT_A_DIGIT}
# Each score flags at most this share of the correct calibration digits, 3% in all; they
# overlap, so together they flag 2.5-2.7% of them (the test's first half, the harder one) and
# 0.7-0.9% of the correct digits of its second half (benchmarks/RESULTS.md, the companion
# taught marks). Most of it is the companion's: the confident mistakes under a shift (a 7
# whose zigzag base reads as a 2) are ones the other readers share, and the companion's
# doubt about them is that of the hardest few % of clean digits. The seed run's confident
# zigzag answers: 92.4% right with the untaught companion at 0.3% (1.6% in all), 98.6% now.
FLAG_RATES = {MARGIN: 0.001, DISAGREE: 0.002, OTHER: 0.007, COMPANION: 0.02}
# A run without a companion (fewer than `companion.MIN_DIGITS` training digits): 1.7% in all.
FLAG_RATES_WITHOUT_COMPANION = {MARGIN: 0.004, DISAGREE: 0.0065, OTHER: 0.0065}
COMPONENTS = 20  # PCA directions per class (issue 12's check)
FIT_PER_CLASS = 4000  # training digits per class the directions are fitted on


# -------------------------------------------------------------------------------- the scores
def margins(probabilities: np.ndarray) -> np.ndarray:
    """Top probability minus the second, per row."""
    top2 = np.sort(np.asarray(probabilities, dtype=np.float64), axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def fit_stats(images: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Per class: the mean training image and its `COMPONENTS` main directions (PCA), which
    `residuals` measures against (issue 12's "not a digit" check; calibration no longer
    fits them, but a run that has them keeps them, and tests build one with them).

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


def _flat(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(PIXEL_MAX)


def residuals(stats: dict[str, np.ndarray], images: np.ndarray, predicted: np.ndarray):
    """Each image's distance (0–1 pixels) from its predicted class's PCA span (the "not a
    digit" score of runs calibrated before issue 22)."""
    x = _flat(images)
    predicted = np.asarray(predicted)
    out = np.empty(len(x), dtype=np.float64)
    for c in np.unique(predicted):  # one matrix product per class, not a basis per image
        rows = np.flatnonzero(predicted == c)
        centred = x[rows] - stats["means"][c]
        basis = stats["components"][c]  # k×D, orthonormal rows
        out[rows] = np.linalg.norm(centred - (centred @ basis.T) @ basis, axis=1)
    return out


def scores(
    stats: dict[str, np.ndarray], keys, images: np.ndarray, probabilities: np.ndarray
) -> dict[str, np.ndarray]:
    """The scores `keys` name (`REASONS`' keys; others are ignored) for each image, higher
    meaning more doubtful, from the run's stored `stats`.

    Raises:
        RunError: the stats lack what a key needs, or don't fit the images (a damaged or
            mismatched confidence.npz).
    """
    keys = [key for key in REASONS if key in keys]
    predicted = np.asarray(probabilities).argmax(axis=1)
    out = {}
    try:
        if RESIDUAL in keys:
            out[RESIDUAL] = residuals(stats, images, predicted)
        if OTHER in keys or DISAGREE in keys:
            verifier = verifiers.verifier_probabilities(stats, images)
            digits = verifier[:, :-1]
            answer = digits[np.arange(len(digits)), predicted]
            out[OTHER] = verifier[:, -1]
            out[DISAGREE] = 1 - answer / np.maximum(digits.sum(axis=1), 1e-12)
        if COMPANION in keys:
            second = companion.companion_probabilities(stats, images)
            out[COMPANION] = 1 - second[np.arange(len(second)), predicted]
    except (KeyError, ValueError, IndexError) as exc:
        raise RunError(
            f"the run's confidence.npz doesn't fit its thresholds ({exc}); run "
            "`digitlab calibrate RUN` to write it again"
        ) from None
    return out


# --------------------------------------------------------------------------------- calibrate
def calibrate(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    train: tuple[np.ndarray, np.ndarray],
    calibration: tuple[np.ndarray, np.ndarray],
    num_classes: int,
    dataset: str = DEFAULT_DATASET,
    level: bool = False,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Train the verifiers (and companion) on `train`; set the thresholds on `calibration`.

    Args:
        predict_proba: uint8 N×H×W → N×classes probabilities (`Run.predict_proba`), its
            backgrounds levelled as `level` says.
        train: (images, labels) the network trained on; the verifiers and the companion
            train on these. With fewer than `verifiers.MIN_DIGITS`, or for a dataset other
            than the digits, there is no verifier, and only the margin judges; with fewer
            than `companion.MIN_DIGITS`, no companion (`FLAG_RATES_WITHOUT_COMPANION`).
        calibration: (images, labels) it did not train on; each threshold flags at most
            its `FLAG_RATES` share of those it classifies correctly, and the prediction
            sets' quantiles come from them too (`conformal.calibrate`).
        dataset: the run's dataset; "not a digit" is learned for the digits only.
        level: the run levels backgrounds (`background.level_background`): the verifiers
            and companion learn from, and judge, images levelled as the network reads them.

    Returns:
        The thresholds for `RunConfig.thresholds` and the verifiers' and companion's
        weights (empty without them), both for `Run.store_calibration`.
    """
    images, labels = calibration
    probabilities = predict_proba(images)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    if correct.sum() < 100:
        raise RunError(
            f"only {int(correct.sum())} correctly classified calibration digits; "
            "calibrating needs at least 100"
        )
    thresholds = {"calibration_digits": float(len(labels))}
    stats: dict[str, np.ndarray] = {}
    keys: tuple[str, ...] = ()  # without a verifier, only the margin judges
    digits = dataset == DEFAULT_DATASET and images.shape[1:] == outliers.FRAME
    if digits and len(train[0]) >= verifiers.MIN_DIGITS:
        stats, seen = verifiers.cached_verifiers(*train, num_classes, level=level)
        thresholds["verifier_examples"] = float(sum(seen.values()))
        keys = (OTHER, DISAGREE)
        if len(train[0]) >= companion.MIN_DIGITS:
            stats = stats | companion.cached_companion(*train, num_classes, level)[0]
            keys = (*keys, COMPANION)
    rates = FLAG_RATES if COMPANION in keys else FLAG_RATES_WITHOUT_COMPANION
    thresholds[MARGIN] = float(np.quantile(margins(probabilities)[correct], rates[MARGIN]))
    seen_images = level_background(images) if level else images
    found = scores(stats, keys, seen_images, probabilities) if keys else {}  # 0.6 s / 5,000
    for key in keys:
        thresholds[key] = float(np.quantile(found[key][correct], 1 - rates[key]))
    confident = judge(probabilities, thresholds, found)[1]
    thresholds["flagged_correct_calibration"] = round(float(np.mean(~confident[correct])), 6)
    thresholds |= conformal.calibrate(probabilities, labels, confident)
    return thresholds, stats


def calibration_notice(dataset: str, train_samples: int) -> str | None:
    """What `digitlab train` says before calibrating a run that has verifiers (None without
    them): the first run on a set of training digits trains them, for minutes."""
    if dataset != DEFAULT_DATASET or train_samples < verifiers.MIN_DIGITS:
        return None
    networks = f"{verifiers.MEMBERS} verifiers" + (
        " and a companion" if train_samples >= companion.MIN_DIGITS else ""
    )
    return (
        "evaluating, then calibrating the confidence verdict: the first run on these training "
        f"digits also trains the networks it reads ({networks}: minutes of CPU), which later "
        "runs on them reuse"
    )


def calibration_size(test_size: int) -> int:
    """How many of the test split's digits, from the first, calibrate a run: half. The rest
    are held out for measuring (`robustness.held_out`)."""
    return test_size // 2


def calibration_split(
    x_train: np.ndarray,
    y_train: np.ndarray,
    test: tuple[np.ndarray, np.ndarray],
    validation_split: float,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """(training digits, calibration digits) as a run saw them.

    The training digits are those the network trained on: all of them, or with a validation
    split all but its last fraction (as `fit` splits them). The verifiers and companion train
    on them too. Calibration always uses the first half of the test split, whose writers the
    network never saw (MNIST's training and test writers are disjoint); the second half is
    what `robustness.held_out` and the benchmarks measure on. A validation split's digits
    come from the training writers: a run calibrated on them flagged 1.8% of the correct
    test digits at 1.35% of its own (benchmarks/RESULTS.md, the companion taught marks).
    """
    if validation_split:
        at = int(np.floor(len(x_train) * (1.0 - validation_split)))
        x_train, y_train = x_train[:at], y_train[:at]
    half = calibration_size(len(test[1]))
    return (x_train, y_train), (test[0][:half], test[1][:half])


# ------------------------------------------------------------------------------------- judge
def judge(
    probabilities: np.ndarray,
    thresholds: dict[str, float],
    scores: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, list[str | None]]:
    """The verdict for each row of probabilities: the one rule everyone applies.

    Args:
        probabilities: N×classes, rows summing to 1.
        thresholds: a run's calibrated thresholds (`Run.thresholds`); {} for an old run.
        scores: each image's score for every threshold of `REASONS` the run has (`scores`).

    Returns:
        (confidence, confident, reason): the top probabilities; a boolean array, or None
        when there are no thresholds (or their scores are missing); per row `"not a
        digit"`, `"unsure"` or None. "not a digit" goes first when both apply.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    needed = [key for key in REASONS if key in thresholds]
    if MARGIN not in thresholds or any(key not in (scores or {}) for key in needed):
        return confidence, None, [None] * len(probabilities)
    flagged = {UNSURE: margins(probabilities) < thresholds[MARGIN]}
    flagged[NOT_A_DIGIT] = np.zeros(len(probabilities), dtype=bool)
    for key in needed:
        flagged[REASONS[key]] = flagged[REASONS[key]] | (np.asarray(scores[key]) > thresholds[key])
    reasons = [
        NOT_A_DIGIT if far else UNSURE if close else None
        for far, close in zip(flagged[NOT_A_DIGIT], flagged[UNSURE], strict=True)
    ]
    return confidence, ~(flagged[NOT_A_DIGIT] | flagged[UNSURE]), reasons


def verdicts(run: Any, images: np.ndarray, probabilities: np.ndarray) -> list[dict[str, Any]]:
    """`{"confidence", "confident", "reason", "prediction_set"}` per image for a `Run`'s
    predictions.

    `images` are the uint8 N×H×W given to `run.predict_proba`; `probabilities` its answers.
    The verifier judges them as the network read them (`Run.network_images`). A run without
    thresholds gets `confident`, `reason` and `prediction_set` None; one calibrated before
    prediction sets existed gets `prediction_set` None (`conformal.prediction_sets`).

    Raises:
        RunError: the run's confidence.npz is missing or damaged (`Run.confidence_stats`).
    """
    thresholds = run.thresholds
    found = None
    if MARGIN in thresholds:
        stored = run.confidence_stats() if any(key in thresholds for key in REASONS) else {}
        found = scores(stored, thresholds, run.network_images(images), probabilities)
    confidence, confident, reasons = judge(probabilities, thresholds, found)
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

    A run on the digits is switched to levelling backgrounds (`background`) as it is
    calibrated, as a run trained since issue 22 does: its answers change only for frames
    with a background, and its verdict is computed for what it now reads.

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
    level, before = levels_background(run.dataset.name), run.preprocessing.level_background
    run.set_level_background(level)  # it reads as it will once stored (`store_calibration`)
    try:
        thresholds, stats = calibrate(
            run.predict_proba, train, held_out, len(run.class_names), run.dataset.name, level
        )
    except BaseException:
        run.set_level_background(before)
        raise
    run.store_calibration(thresholds, stats)
    return thresholds


def calibration_message(run_name: str, thresholds: dict[str, float]) -> str:
    """The line `digitlab calibrate` prints: on how many digits, what judges, the share of
    correct answers flagged, and the prediction sets' coverage."""
    judges = ["the top-two margin"]
    judges += ["the verifier networks (unsure, not a digit)"] if OTHER in thresholds else []
    judges += ["the companion network (unsure)"] if COMPANION in thresholds else []
    judged = " and ".join([", ".join(judges[:-1]), judges[-1]] if len(judges) > 1 else judges)
    flagged = thresholds["flagged_correct_calibration"]
    return (
        f"calibrated {run_name} on {int(thresholds['calibration_digits'])} held-out digits: "
        f"{judged} flag{'' if len(judges) > 1 else 's'} {flagged:.1%} of the correctly "
        "classified ones; prediction sets "
        f"hold the true digit {thresholds['set_coverage']:.0%} of the time"
    )
