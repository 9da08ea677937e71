"""The plan of an experiment, as pure functions: each variant's spec, the budget, the
learning rates to tune, and the (variant, seed) cells still to train.

Nothing here trains, reads or writes: the runner (`runner.py`) carries the plan out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np

from digitlab.data import PIXEL_MAX
from digitlab.errors import RunError, SpecError
from digitlab.experiments.record import RECORD_FILE
from digitlab.experiments.schema import (
    LEARNING_RATE_POLICIES,
    Budget,
    Definition,
    ExperimentRecord,
    Variant,
)
from digitlab.schema import Spec, validate

ACTIVATION_BATCH = 500  # the fixed validation digits the activation statistics are taken on
# The seed of a variant's learning-rate tuning runs: not one of the seeds 0..N-1 that are
# compared, so the rate is not chosen on the very runs it is then judged by (Dodge et al.
# 2019; Bouthillier et al. 2021).
TUNING_SEED = 1000
RECORDED_SEED = 0  # the seed whose run of each variant records its mechanisms (issue 21)
Cell = tuple[Variant, int]  # one (variant, seed): one ordinary run
TuningCell = tuple[Variant, float]  # one (variant, learning rate) of its grid, at TUNING_SEED


def checked_policy(policy: str | None) -> str | None:
    """`policy` if it is None (the definition's) or one of `LEARNING_RATE_POLICIES`.

    Raises:
        SpecError: any other value.
    """
    if policy not in (None, *LEARNING_RATE_POLICIES):
        raise SpecError(
            f"learning_rate_policy must be one of {', '.join(LEARNING_RATE_POLICIES)}, "
            f"got {policy!r}"
        )
    return policy


def steps_per_epoch(batch_size: int, fit: int) -> int:
    """Weight updates per epoch: the `fit` digits an epoch trains on over the batch actually
    used (a batch larger than the digits is all of them, one update)."""
    return math.ceil(fit / min(batch_size, fit))


def fit_digits(spec: Spec) -> int:
    """The digits each epoch of `spec`'s runs trains on: its `train_samples` less the
    validation split taken from their end, as `fastfit` splits them."""
    total = spec.train.train_samples or 0
    return math.floor(total * (1.0 - spec.train.validation_split))


def variant_digits(variant: Variant, budget: Budget, quick: bool = False) -> int:
    """The digits each epoch of `variant`'s runs trains on: its `train_digits`, else the
    budget's; a quick (smoke) budget caps them at its own.

    Raises:
        SpecError: the variant asks for more digits than the budget holds.
    """
    wanted = variant.train_digits or budget.fit_samples
    if wanted > budget.fit_samples and not quick:
        raise SpecError(
            f"variant '{variant.name}' trains on {wanted:,} digits, but the budget leaves "
            f"{budget.fit_samples:,} (train_samples = {budget.train_samples:,} less the "
            "validation split); raise --train-samples or lower its train_digits"
        )
    return min(wanted, budget.fit_samples)


def variant_epochs(variant: Variant, batch_size: int, budget: Budget, quick: bool = False) -> int:
    """The epochs each run of `variant` trains: the budget's, raised to reach the variant's
    `min_updates` (a large batch or few digits take few updates per epoch); a quick (smoke)
    budget keeps its own."""
    if variant.min_updates is None or quick:
        return budget.epochs
    steps = steps_per_epoch(batch_size, variant_digits(variant, budget))
    return max(budget.epochs, math.ceil(variant.min_updates / steps))


def tunes(definition: Definition, variant: Variant, policy: str, quick: bool) -> bool:
    """Whether `variant`'s learning rate is tuned on its grid: under the "tuned" policy, for a
    variant with `learning_rates`, except in a quick (smoke) run, which keeps its own rate."""
    return policy == "tuned" and bool(variant.learning_rates) and not quick


def _base_rate(train: Mapping, spec: Spec) -> float:
    from digitlab.model import default_learning_rate

    optimizer = train.get("optimizer", spec.train.optimizer)
    rate = train.get("learning_rate", spec.train.learning_rate)
    return float(rate if rate is not None else default_learning_rate(optimizer))


def variant_spec(
    definition: Definition,
    variant: Variant,
    budget: Budget,
    seed: int,
    policy: str,
    standardize: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    learning_rate: float | None = None,
    quick: bool = False,
) -> Spec:
    """The spec of one (variant, seed): its preset, layers, training overrides, the budget.

    Input scaling is a `Rescaling` layer in front of the network (it sees the pixels scaled
    to [0, 1], like every run): ×PIXEL_MAX for raw pixels, `(x − mean) / std` per pixel for
    standardised ones (`standardize`: the mean and deviation of each pixel, shaped as the
    network's input), so the saved run predicts from ordinary images like any other.

    The learning rate is `learning_rate` when given (a tuning run's, or the rate tuning
    chose); under the "linear" policy the variant's rate × batch / `reference_batch`, with
    the batch actually used (min(batch, the digits fit trains on)); else the variant's own.
    """
    from digitlab.presets import get_preset

    spec = get_preset(variant.preset)
    layers = list(variant.layers if variant.layers is not None else spec.layers)
    if variant.input_scaling == "raw":
        layers.insert(0, {"type": "Rescaling", "scale": float(PIXEL_MAX)})
    elif variant.input_scaling == "standardize":
        mean, std = standardize if standardize is not None else (0.0, 1.0)
        scale, offset = 1 / np.asarray(std), -np.asarray(mean) / np.asarray(std)
        layers.insert(0, {"type": "Rescaling", "scale": scale.tolist(), "offset": offset.tolist()})
    train = {**variant.train}
    fit = variant_digits(variant, budget, quick)
    batch = (  # the preset's own batch size unless the variant sets one
        fit if variant.full_batch else train.get("batch_size", spec.train.batch_size)
    )
    train["batch_size"] = batch
    if learning_rate is not None:
        train["learning_rate"] = learning_rate
    elif policy == "linear":
        used = min(batch, fit)
        if used != definition.reference_batch:
            train["learning_rate"] = _base_rate(train, spec) * used / definition.reference_batch
    train.update(
        epochs=variant_epochs(variant, batch, budget, quick),
        **_digits(fit, budget),
        seed=seed,
    )
    description = variant.description or spec.description
    return spec.replace(
        name=variant.name, layers=layers, train=train, description=description[:2000]
    )


def _digits(fit: int, budget: Budget) -> dict[str, float]:
    """`train_samples` and `validation_split` that train on the first `fit` digits and
    validate on the budget's count of validation digits right after them: the budget's own
    when `fit` is all of its digits, else a split that puts the boundary at `fit` exactly
    (half a digit short of it, so the floor `fastfit` takes lands on it)."""
    if fit == budget.fit_samples:
        return {"train_samples": budget.train_samples, "validation_split": budget.validation_split}
    validation = budget.train_samples - budget.fit_samples
    total = fit + validation
    return {"train_samples": total, "validation_split": (validation - 0.5) / total}


def standardization(pixels: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's mean and standard deviation over `pixels` (N × pixels, scaled to [0, 1]),
    shaped as the network's input; a pixel that never changes keeps the deviation 1 (it is
    only centred), as scikit-learn's `StandardScaler` does, instead of dividing by 0."""
    flat = pixels.reshape(len(pixels), -1).astype(np.float64)
    mean, std = flat.mean(axis=0), flat.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    return mean.reshape(shape), std.reshape(shape)


def make_budget(definition: Definition, quick: bool, **overrides: int | None) -> Budget:
    """The definition's budget (its quick one if `quick`), with the given values overridden.

    Raises:
        SpecError: an override is out of range.
    """
    base = definition.quick if quick else definition.budget
    given = {key: value for key, value in overrides.items() if value is not None}
    return validate(Budget, {**base.model_dump(), **given}, f"experiment {definition.name}")


def resumed_budget(
    previous: ExperimentRecord,
    folder: Path,
    *,
    seeds: int | None,
    epochs: int | None,
    train_samples: int | None,
    policy: str | None,
) -> Budget:
    """The budget an experiment resumes with: its own; only `seeds` may grow it.

    Raises:
        RunError: the record's budget is unreadable.
        SpecError: `epochs`, `train_samples` or `policy` differ from the record's.
    """
    old = validate(
        Budget,
        {key: previous.budget.get(key) for key in Budget.model_fields},
        f"{folder / RECORD_FILE}: budget",
        error=RunError,
    )
    changed = [
        flag
        for flag, value, was in (
            ("--epochs", epochs, old.epochs),
            ("--train-samples", train_samples, old.train_samples),
        )
        if value is not None and value != was
    ]
    if changed or (policy not in (None, previous.learning_rate_policy)):
        raise SpecError(
            f"--resume completes {folder.name} with its own budget, so "
            f"{', '.join(changed) or '--lr-policy'} can't change; leave them out "
            "(only --seeds may add seeds)"
        )
    return validate(Budget, {**old.model_dump(), "seeds": seeds or old.seeds}, "--seeds")


def check_budget(budget: Budget, specs: dict[str, Spec]) -> None:
    """Refuse a budget some variant can't train on: each epoch must hold at least one batch.

    Raises:
        SpecError: a variant's batch is larger than the digits each epoch trains on.
    """
    for name, spec in specs.items():
        batch, fit = spec.train.batch_size, fit_digits(spec)
        if batch > fit:
            where = (
                f"train_samples = {budget.train_samples} less the validation split"
                if fit == budget.fit_samples
                else "its train_digits"
            )
            raise SpecError(
                f"variant '{name}': batch size {batch} is larger than the {fit} digits each "
                f"epoch trains on ({where}); lower its batch_size or raise train_samples"
            )


def tuning_to_do(
    definition: Definition,
    policy: str,
    quick: bool,
    done: Iterable[tuple[str, float]],
    diverged: Iterable[tuple[str, float]],
) -> list[TuningCell]:
    """The (variant, rate) tuning runs still to train, variant by variant: every rate of each
    tuned variant's grid but those `done` (complete) or `diverged`."""
    skip = {(name, float(rate)) for name, rate in (*done, *diverged)}
    return [
        (variant, float(rate))
        for variant in definition.variants
        if tunes(definition, variant, policy, quick)
        for rate in variant.learning_rates
        if not any(name == variant.name and math.isclose(r, rate) for name, r in skip)
    ]


def choose_rate(points: Iterable[Mapping]) -> float | None:
    """The rate of the grid point with the best final validation accuracy (the lower
    validation loss breaks a tie); diverged points and points without a figure are left
    out. None when none is left: every rate diverged."""
    ranked = [
        (p["val_accuracy"], -(p.get("val_loss") or 0.0), p["learning_rate"])
        for p in points
        if not p.get("diverged") and p.get("val_accuracy") is not None
    ]
    return max(ranked)[2] if ranked else None


def cells_to_do(
    definition: Definition,
    seeds: int,
    complete: set[tuple[str, int]],
    diverged: set,
    untrainable: Iterable[str] = (),
) -> list[Cell]:
    """The (variant, seed) cells still to train, seed by seed (so an interrupted experiment
    holds comparable variants): all but those `complete` or `diverged`, by (name, seed), and
    those of `untrainable` variants (every rate of their grid diverged)."""
    skip = set(untrainable)
    return [
        (v, s)
        for s in range(seeds)
        for v in definition.variants
        if (v.name, s) not in complete and (v.name, s) not in diverged and v.name not in skip
    ]


def epochs_to_do(
    cells: list[Cell], specs: Mapping[str, Spec], epochs_done: Mapping[tuple[str, int], int]
) -> int:
    """The epochs the cells still need: a partly trained run continues where it stopped."""
    return sum(specs[v.name].train.epochs - epochs_done.get((v.name, s), 0) for v, s in cells)


def updates_per_run(spec: Spec) -> int:
    """Weight updates of one run: steps per epoch × its epochs."""
    return steps_per_epoch(spec.train.batch_size, fit_digits(spec)) * spec.train.epochs
