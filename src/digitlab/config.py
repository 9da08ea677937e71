"""What a run is made of: the network spec and the training config, resolved from layers.

Resolution order, later wins: a preset < a TOML spec file < command-line flags.
Every field has a default and a reason; an unknown key anywhere is an error, so a typo in
a spec file is caught before a minute of training is spent on the wrong thing.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from digitlab.errors import SpecError

# The four losses of the notebook's two paths: integer labels with sparse cross-entropy, or
# one-hot labels with anything else. Keras's short aliases are accepted and normalised.
LOSSES = (
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "mean_squared_error",
    "mean_absolute_error",
)
LOSS_ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error"}
OPTIMIZERS = ("adam", "sgd", "rmsprop", "adagrad", "adamw", "nadam")
METRICS = ("accuracy", "precision", "recall")
INPUTS = ("flat", "image")
# "constant" keeps the learning rate fixed, as the notebook does; "cosine" decays it to zero
# over the whole fit along half a cosine (Loshchilov & Hutter 2017,
# https://arxiv.org/abs/1608.03983), which settles the last epochs without a tuned drop.
LEARNING_RATE_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """How to compile and fit. Names are Keras's own (`batch_size`, `validation_split`, ...)."""

    optimizer: str = "adam"  # the notebook's choice
    learning_rate: float | None = None  # None: the optimizer's Keras default (adam: 0.001)
    learning_rate_schedule: str = "constant"  # the notebook's; "cosine" decays it to 0 by the end
    loss: str = "sparse_categorical_crossentropy"  # integer labels, no one-hot copy needed
    metrics: tuple[str, ...] = ("accuracy",)
    batch_size: int = 32  # Keras's default and the notebook's
    epochs: int = 10  # the notebook's
    validation_split: float = 0.0  # the notebook trains on all 60,000; curves then show train only
    early_stopping: int | None = None  # patience in epochs on val_loss; needs a validation split
    seed: int = 0  # same seed, same weights and accuracy on CPU
    dataset: str = "mnist"
    train_samples: int | None = None  # use only the first N training digits (quick trials, tests)

    @property
    def one_hot(self) -> bool:
        """Whether labels are one-hot encoded for this loss (every loss but the sparse one)."""
        return self.loss != "sparse_categorical_crossentropy"


@dataclass(frozen=True)
class Spec:
    """A network: its layers as Keras layer configs, and the input shape they expect.

    `layers` holds one dict per layer, `{"type": "Dense", "units": 100, "activation": "relu"}`,
    with Keras's own argument names. `input` says how images are fed: "flat" is the notebook's
    784-vector scaled to [0, 1]; "image" keeps 28×28×1 for convolutional networks.
    """

    name: str
    layers: tuple[dict[str, Any], ...]
    input: str = "flat"
    train: TrainConfig = field(default_factory=TrainConfig)
    description: str = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (784,) if self.input == "flat" else (28, 28, 1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that `spec_from_dict` turns back into an equal Spec."""
        out = dataclasses.asdict(self)
        out["layers"] = [dict(layer) for layer in self.layers]
        out["train"]["metrics"] = list(self.train.metrics)
        return out


def spec_from_dict(data: dict[str, Any]) -> Spec:
    """Rebuild a Spec from `Spec.to_dict()` output (as stored in a run's config.json)."""
    train = dict(data.get("train", {}))
    train["metrics"] = tuple(train.get("metrics", ("accuracy",)))
    return Spec(
        name=data["name"],
        layers=tuple(dict(layer) for layer in data["layers"]),
        input=data.get("input", "flat"),
        train=TrainConfig(**train),
        description=data.get("description", ""),
    )


def did_you_mean(name: str, valid) -> str:
    """` (did you mean 'x'?)` for the closest valid name, or "" when none is close."""
    match = difflib.get_close_matches(name, list(valid), n=1)
    return f" (did you mean '{match[0]}'?)" if match else ""


def _check_keys(given, valid, where: str) -> None:
    for key in given:
        if key not in valid:
            raise SpecError(
                f"unknown key '{key}' in {where}{did_you_mean(key, valid)}; "
                f"valid keys: {', '.join(sorted(valid))}"
            )


def with_overrides(spec: Spec, **overrides: Any) -> Spec:
    """Return `spec` with training fields replaced; None values mean "not given".

    Raises:
        SpecError: an override names no TrainConfig field.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    _check_keys(given, {f.name for f in dataclasses.fields(TrainConfig)}, "training options")
    if "metrics" in given:
        given["metrics"] = tuple(given["metrics"])
    return dataclasses.replace(spec, train=dataclasses.replace(spec.train, **given))


def read_toml(path: Path, kind: str) -> dict[str, Any]:
    """A TOML file's tables, or a one-line SpecError naming the `kind` of file and the path."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"{kind} {path} not found; pass the path of a TOML file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SpecError(f"{kind} {path} is not valid TOML: {exc}") from None


def load_spec_file(path: str | Path, base: Spec) -> Spec:
    """Read a TOML spec file on top of `base` (a preset).

    The file may hold `name`, `description`, `input`, a `[train]` table (TrainConfig fields)
    and `[[layers]]` tables (each with `type` and the layer's Keras arguments). Layers given
    in the file replace the preset's; training fields override one by one.

    Raises:
        SpecError: the file is missing, is not valid TOML, or has an unknown key.
    """
    path = Path(path)
    data = read_toml(path, "spec file")
    _check_keys(data, {"name", "description", "input", "train", "layers"}, f"spec file {path}")
    layers = data.get("layers", base.layers)
    if not isinstance(layers, list | tuple) or not all(isinstance(x, dict) for x in layers):
        raise SpecError(f"spec file {path}: 'layers' must be [[layers]] tables")
    spec = dataclasses.replace(
        base,
        name=data.get("name", path.stem),
        description=data.get("description", ""),
        input=data.get("input", base.input),
        layers=tuple(dict(layer) for layer in layers),
    )
    return with_overrides(spec, **data.get("train", {}))


def validate_train_config(train: TrainConfig) -> TrainConfig:
    """Check the training choices against each other; returns it with aliases normalised.

    Raises:
        SpecError: an unknown optimizer, loss or metric, or values out of range.
    """
    loss = LOSS_ALIASES.get(train.loss, train.loss)
    if loss == "binary_crossentropy":
        raise SpecError(
            "loss binary_crossentropy is for two classes, and digits have 10; "
            "use sparse_categorical_crossentropy or categorical_crossentropy"
        )
    if loss not in LOSSES:
        raise SpecError(
            f"unknown loss '{train.loss}'{did_you_mean(train.loss, LOSSES)}; "
            f"valid losses: {', '.join(LOSSES)}"
        )
    if train.optimizer not in OPTIMIZERS:
        raise SpecError(
            f"unknown optimizer '{train.optimizer}'{did_you_mean(train.optimizer, OPTIMIZERS)}; "
            f"valid optimizers: {', '.join(OPTIMIZERS)}"
        )
    for metric in train.metrics:
        if metric not in METRICS:
            raise SpecError(
                f"unknown metric '{metric}'{did_you_mean(metric, METRICS)}; "
                f"valid metrics: {', '.join(METRICS)}"
            )
    if train.learning_rate_schedule not in LEARNING_RATE_SCHEDULES:
        raise SpecError(
            f"unknown learning rate schedule '{train.learning_rate_schedule}'"
            f"{did_you_mean(train.learning_rate_schedule, LEARNING_RATE_SCHEDULES)}; "
            f"valid schedules: {', '.join(LEARNING_RATE_SCHEDULES)}"
        )
    if train.learning_rate is not None and not train.learning_rate > 0:
        raise SpecError(f"learning rate must be positive, got {train.learning_rate}")
    if train.batch_size < 1:
        raise SpecError(f"batch size must be at least 1, got {train.batch_size}")
    if train.train_samples is not None and train.train_samples < 1:
        raise SpecError(f"train samples must be at least 1, got {train.train_samples}")
    if train.epochs < 1:
        raise SpecError(f"epochs must be at least 1, got {train.epochs}")
    if not 0.0 <= train.validation_split < 1.0:
        raise SpecError(
            f"validation split must be in [0, 1), got {train.validation_split}; e.g. 0.1"
        )
    if train.early_stopping is not None:
        if train.early_stopping < 1:
            raise SpecError(
                f"early stopping patience must be at least 1 epoch, got {train.early_stopping}"
            )
        if train.validation_split == 0.0:
            raise SpecError(
                "early stopping watches the validation loss; add --validation-split 0.1"
            )
    return dataclasses.replace(train, loss=loss)
