"""The plan of an experiment, as pure functions: each variant's spec, the budget, and the
(variant, seed) cells still to train."""

from __future__ import annotations

import math

from digitlab.experiments.schema import Budget, Definition, Variant
from digitlab.schema import OPTIMIZERS, Spec, validate


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

    Input scaling is a `Rescaling` layer in front of the network (it sees the pixels /255,
    like every run): ×255 for raw pixels, `(x − mean) / std` for standardised ones, so the
    saved run predicts from ordinary images like any other.
    """
    from digitlab.presets import get_preset

    spec = get_preset(variant.preset)
    layers = list(variant.layers if variant.layers is not None else spec.layers)
    if variant.input_scaling == "raw":
        layers.insert(0, {"type": "Rescaling", "scale": 255.0})
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


def _budget(definition: Definition, quick: bool, **overrides: int | None) -> Budget:
    base = definition.quick if quick else definition.budget
    given = {key: value for key, value in overrides.items() if value is not None}
    return validate(Budget, {**base.model_dump(), **given}, f"experiment {definition.name}")


def _updates(spec: Spec, budget: Budget, epochs: int) -> int:
    return math.ceil(budget.fit_samples / spec.train.batch_size) * epochs
