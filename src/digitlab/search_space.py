"""The search space of `digitlab tune`: the issue's table as data, read from TOML, checked.

A space holds ranges `(low, high)` (both included) and tuples of choices; a TOML file
overrides any of them and a single value fixes one. Unknown names, empty ranges and unknown
choices are refused in one line. `spec_for_trial` turns an Optuna trial's draws into the same
`Spec` a preset or spec file gives.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from digitlab.choices import canonical
from digitlab.config import read_toml
from digitlab.data import NUM_CLASSES
from digitlab.errors import SpecError
from digitlab.presets import get_preset
from digitlab.schema import (
    LEARNING_RATE_SCHEDULES,
    MAX_UNITS,
    OPTIMIZERS,
    Spec,
    TrainConfig,
    _Strict,
    register,
    unknown,
    validate,
)

if TYPE_CHECKING:  # Optuna itself is imported by digitlab.tune, quietly (see there)
    import optuna

Layers = Annotated[int, Field(ge=1, le=16)]
Units = Annotated[int, Field(ge=1, le=MAX_UNITS)]
Rate = Annotated[float, Field(ge=0.0, lt=1.0)]
LearningRate = Annotated[float, Field(gt=0.0, le=100.0)]
Batch = Annotated[int, Field(ge=1, le=1 << 20)]
RANGES = ("hidden_layers", "units", "dropout", "learning_rate")
CHOICES = ("activation", "optimizer", "learning_rate_schedule", "batch_size")


@register
class SearchSpace(_Strict):
    """What a study searches. Ranges are (low, high), both included; choices are tuples.

    Units and dropout are drawn for each hidden layer (`units_1`, `dropout_1`, ...), the
    activation once for the whole network. The defaults are issue 5's table, plus the
    learning rate schedule the `mlp` and `cnn` presets train with. In a TOML space file
    each key is optional, a range is `[low, high]` and a single value fixes it.
    """

    hidden_layers: tuple[Layers, Layers] = (1, 4)  # Dense layers before the softmax output
    units: tuple[Units, Units] = (32, 1024)  # log scale: 32→64 matters as much as 512→1024
    activation: tuple[str, ...] = Field(("relu", "sigmoid", "tanh", "gelu"), min_length=1)
    dropout: tuple[Rate, Rate] = (0.0, 0.5)  # after each hidden layer; 0 adds no layer
    optimizer: tuple[Literal[tuple(OPTIMIZERS)], ...] = Field(
        ("adam", "sgd", "rmsprop"), min_length=1
    )
    learning_rate: tuple[LearningRate, LearningRate] = (1e-4, 1e-1)  # log scale, like units
    learning_rate_schedule: tuple[Literal[LEARNING_RATE_SCHEDULES], ...] = Field(
        ("constant", "cosine"), min_length=1
    )  # cosine: to 0 by the end
    batch_size: tuple[Batch, ...] = Field((32, 64, 128, 256), min_length=1)
    # each trial's budget (the notebook's 10); the pruner stops poor ones early
    epochs: int = Field(10, ge=1, le=10_000)

    @field_validator(*RANGES, mode="before")
    @classmethod
    def _as_range(cls, value: Any) -> Any:
        """A single value fixes a range: `units = 128` is `[128, 128]`."""
        if isinstance(value, list | tuple):
            return tuple(value)
        return (value, value)

    @field_validator(*CHOICES, mode="before")
    @classmethod
    def _as_choices(cls, value: Any) -> Any:
        """A single value is the only choice: `optimizer = "adam"` is `["adam"]`."""
        return tuple(value) if isinstance(value, list | tuple) else (value,)

    @field_validator("activation")
    @classmethod
    def _known_activations(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from digitlab.model import ACTIVATIONS  # imports Keras: only once work is about to start

        names = tuple(canonical(name, ACTIVATIONS) for name in value)  # "ReLU" is relu
        for name in names:
            if name not in ACTIVATIONS:
                raise ValueError(unknown("activation", name, ACTIVATIONS))
        return names

    @model_validator(mode="after")
    def _ranges_not_empty(self) -> SearchSpace:
        for key in RANGES:
            low, high = getattr(self, key)
            if low > high:
                raise ValueError(
                    f"empty range for {key}: [{low}, {high}] has low > high; "
                    "write [low, high] with low ≤ high"
                )
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON/TOML-ready: tuples become lists. `space_from_dict` reads it back."""
        return self.model_dump(mode="json")


SPACE_KEYS = tuple(SearchSpace.model_fields)


def load_space(path: str | Path) -> SearchSpace:
    """Read a TOML space file; keys left out keep the default table's range.

    Raises:
        SpecError: the file is missing or not TOML, names an unknown parameter, or has an
            empty or invalid range; the message lists the valid names.
    """
    path = Path(path)
    return space_from_dict(read_toml(path, "space file"), where=f"space file {path}")


def space_from_dict(data: Any, where: str = "the search space") -> SearchSpace:
    """A checked SearchSpace from a dict shaped like a space file (or `SearchSpace.to_dict()`).

    Raises:
        SpecError: as for `load_space`.
    """
    return validate(SearchSpace, data, where, SpecError)


def space_from_options(path: str | Path | None, epochs: int | None) -> SearchSpace | None:
    """`tune --space FILE --epochs N`: the file's space (or the default one) with its budget
    set to `epochs`; None when neither is given (`tune`'s default space).

    Raises:
        SpecError: as for `load_space`, or `epochs` below 1.
    """
    space = load_space(path) if path is not None else None
    if epochs is not None:  # checked by the space's own schema: a whole number ≥ 1
        base = (space or SearchSpace()).to_dict()
        space = space_from_dict({**base, "epochs": epochs}, where="--epochs")
    return space


def spec_for_trial(
    trial: optuna.trial.BaseTrial,
    space: SearchSpace,
    train: TrainConfig,
    name: str = "trial",
    num_classes: int = NUM_CLASSES,
) -> Spec:
    """The network and training config a trial draws from `space`.

    The same function turns a finished trial back into its Spec:
    `spec_for_trial(optuna.trial.FixedTrial(best.params), space, train)`.

    Args:
        trial: an Optuna trial, or a `FixedTrial` holding a finished trial's params.
        space: the ranges to draw from.
        train: the fixed training setup (dataset, samples, validation split, seed); the
            optimizer, learning rate, batch size and epochs come from the trial and space.
        name: the Spec's name (the Keras model's and the run's).
        num_classes: units of the softmax output layer.
    """
    layers: list[dict[str, Any]] = []
    depth = trial.suggest_int("hidden_layers", *space.hidden_layers)
    activation = trial.suggest_categorical("activation", space.activation)
    for i in range(1, depth + 1):
        units = trial.suggest_int(f"units_{i}", *space.units, log=True)
        layers.append({"type": "Dense", "units": units, "activation": activation})
        rate = trial.suggest_float(f"dropout_{i}", *space.dropout)
        if rate > 0:
            layers.append({"type": "Dropout", "rate": rate})
    layers.append({"type": "Dense", "units": num_classes, "activation": "softmax"})
    draws = {
        "optimizer": trial.suggest_categorical("optimizer", space.optimizer),
        "learning_rate": trial.suggest_float("learning_rate", *space.learning_rate, log=True),
        "learning_rate_schedule": trial.suggest_categorical(
            "learning_rate_schedule", space.learning_rate_schedule
        ),
        "batch_size": trial.suggest_categorical("batch_size", space.batch_size),
        "epochs": space.epochs,
    }
    train = TrainConfig.model_validate({**train.model_dump(), **draws})
    return Spec(name=name, layers=tuple(layers), train=train, description=describe(trial.params))


def preset_point(space: SearchSpace, preset: str = "mlp") -> dict[str, Any] | None:
    """A preset's network as a trial's params in `space`, or None if the space can't hold it.

    `tune` enqueues it as a new study's first trial (Optuna's `enqueue_trial`), so the
    search starts from the best hand-made MLP and spends its budget looking past it. The
    params are read from the preset itself: Dense layers, each optionally followed by
    Dropout, then the output layer.
    """
    spec = get_preset(preset)
    hidden: list[list[Any]] = []  # [units, activation, dropout] per hidden layer
    for layer in spec.layers[:-1]:
        if layer["type"] == "Dense":
            hidden.append([layer["units"], layer.get("activation", "linear"), 0.0])
        elif layer["type"] == "Dropout" and hidden:
            hidden[-1][2] = layer["rate"]
        else:
            return None  # not an MLP of this space's shape
    activations = {activation for _, activation, _ in hidden}
    train = spec.train
    params: dict[str, Any] = {"hidden_layers": len(hidden), "activation": activations.pop()}
    for i, (units, _, rate) in enumerate(hidden, start=1):
        params[f"units_{i}"], params[f"dropout_{i}"] = units, rate
    params |= {
        "optimizer": train.optimizer,
        "learning_rate": train.learning_rate,
        "learning_rate_schedule": train.learning_rate_schedule,
        "batch_size": train.batch_size,
    }
    inside = (
        not activations  # one activation for every hidden layer, as the space draws it
        and _within(params["hidden_layers"], space.hidden_layers)
        and all(_within(u, space.units) for u, _, _ in hidden)
        and all(_within(r, space.dropout) for _, _, r in hidden)
        and _within(params["learning_rate"], space.learning_rate)
        and all(params[key] in getattr(space, key) for key in CHOICES)
    )
    return params if inside else None


def _within(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= value <= bounds[1]


def describe(params: dict[str, Any]) -> str:
    """A trial's params in one short line: `2×[512, 64] relu · dropout [0.12, 0.30] · ...`."""
    if "hidden_layers" not in params:  # a trial that failed before drawing anything
        return ""
    depth = params["hidden_layers"]
    units = ", ".join(str(params.get(f"units_{i}", "?")) for i in range(1, depth + 1))
    drops = ", ".join(f"{params.get(f'dropout_{i}', 0):.2f}" for i in range(1, depth + 1))
    parts = [f"{depth}×[{units}] {params.get('activation', '?')}", f"dropout [{drops}]"]
    if "optimizer" in params:
        schedule = " cosine" if params.get("learning_rate_schedule") == "cosine" else ""
        parts.append(f"{params['optimizer']} lr {params.get('learning_rate', 0):.1e}{schedule}")
    if "batch_size" in params:
        parts.append(f"batch {params['batch_size']}")
    return " · ".join(parts)
