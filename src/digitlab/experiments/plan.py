"""The plan of an experiment, as pure functions: each variant's spec, the budget, and the
(variant, seed) cells still to train.

Nothing here trains, reads or writes: the runner (`runner.py`) carries the plan out.
"""

from __future__ import annotations

import math
from pathlib import Path

from digitlab.data import PIXEL_MAX
from digitlab.errors import RunError, SpecError
from digitlab.experiments.record import RECORD_FILE
from digitlab.experiments.schema import Budget, Definition, ExperimentRecord, Variant
from digitlab.schema import OPTIMIZERS, Spec, validate

ACTIVATION_BATCH = 500  # the fixed validation digits the activation statistics are taken on
Cell = tuple[Variant, int]  # one (variant, seed): one ordinary run


def _default_rate(optimizer: str) -> float:
    import inspect

    import keras

    cls = getattr(keras.optimizers, OPTIMIZERS[optimizer])
    return float(inspect.signature(cls).parameters["learning_rate"].default)


def variant_spec(
    definition: Definition,
    variant: Variant,
    budget: Budget,
    seed: int,
    policy: str,
    standardize: tuple[float, float] = (0.0, 1.0),
) -> Spec:
    """The spec of one (variant, seed): its preset, layers, training overrides, the budget.

    Input scaling is a `Rescaling` layer in front of the network (it sees the pixels scaled
    to [0, 1], like every run): ×PIXEL_MAX for raw pixels, `(x − mean) / std` for
    standardised ones, so the saved run predicts from ordinary images like any other.
    """
    from digitlab.presets import get_preset

    spec = get_preset(variant.preset)
    layers = list(variant.layers if variant.layers is not None else spec.layers)
    if variant.input_scaling == "raw":
        layers.insert(0, {"type": "Rescaling", "scale": float(PIXEL_MAX)})
    elif variant.input_scaling == "standardize":
        mean, std = standardize
        layers.insert(0, {"type": "Rescaling", "scale": 1 / std, "offset": -mean / std})
    train = {**variant.train}
    batch = (  # the preset's own batch size unless the variant sets one
        budget.fit_samples if variant.full_batch else train.get("batch_size", spec.train.batch_size)
    )
    train["batch_size"] = batch
    if policy == "linear" and batch != definition.reference_batch:
        optimizer = train.get("optimizer", spec.train.optimizer)
        rate = train.get("learning_rate", spec.train.learning_rate) or _default_rate(optimizer)
        train["learning_rate"] = rate * batch / definition.reference_batch
    train.update(
        epochs=budget.epochs,
        train_samples=budget.train_samples,
        validation_split=budget.validation_split,
        seed=seed,
    )
    description = variant.description or spec.description
    return spec.replace(
        name=variant.name, layers=layers, train=train, description=description[:2000]
    )


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
        batch = spec.train.batch_size
        if batch > budget.fit_samples:
            raise SpecError(
                f"variant '{name}': batch size {batch} is larger than the "
                f"{budget.fit_samples} digits each epoch trains on (train_samples = "
                f"{budget.train_samples} less the validation split); lower its batch_size "
                "or raise train_samples"
            )


def cells_to_do(
    definition: Definition, seeds: int, complete: set[tuple[str, int]], diverged: set
) -> list[Cell]:
    """The (variant, seed) cells still to train, seed by seed (so an interrupted experiment
    holds comparable variants): all but those `complete` or `diverged`, by (name, seed)."""
    return [
        (v, s)
        for s in range(seeds)
        for v in definition.variants
        if (v.name, s) not in complete and (v.name, s) not in diverged
    ]


def epochs_to_do(cells: list[Cell], budget: Budget, epochs_done: dict[tuple[str, int], int]) -> int:
    """The epochs the cells still need: a partly trained run continues where it stopped."""
    return sum(budget.epochs - epochs_done.get((v.name, s), 0) for v, s in cells)


def updates_per_run(spec: Spec, budget: Budget, epochs: int) -> int:
    """Weight updates of one run: steps per epoch × epochs."""
    return math.ceil(budget.fit_samples / spec.train.batch_size) * epochs
