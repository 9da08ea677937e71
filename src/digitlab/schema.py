"""The one typed schema: every spec, training config, search space and run file, as Pydantic v2.

Whatever a user or another program hands digitlab — a flag, a TOML file, a Python call, a
run's `config.json` or `metrics.json` — is checked here, once, by the same models:

- unknown keys are refused (`extra="forbid"`), with a did-you-mean suggestion;
- choices are `Literal`s built from the one list of each (`digitlab.choices`: optimizers,
  losses, metrics, ...), read in any case and stored as the canonical name (`SGD` → `sgd`);
- numbers carry their bounds (`epochs ≥ 1`, `0 ≤ seed < 2**32`, finite positive rates);
- types are strict: `epochs = "ten"`, `epochs = 2.5` and `metrics = "accuracy"` are errors,
  not guesses;
- a model validator holds the rules that tie fields together.

A `ValidationError` never reaches a user: `one_line(exc, where)` turns its first problem
into the one-line message the CLI prints after `Error:` (exit 2) and the API returns as 4xx
(`digitlab.validation`; `validate`, `one_line`, `unknown`, `did_you_mean` and `register` are
importable from here too, as are the lists of `digitlab.choices`).
"""

from __future__ import annotations

import math
import typing
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from digitlab.choices import (
    DATASETS,
    INPUTS,
    LAYER_TYPES,
    LEARNING_RATE_SCHEDULES,
    LOSS_ALIASES,
    LOSSES,
    MAX_FILTERS,
    MAX_SEED,
    MAX_UNITS,
    METRICS,
    OPTIMIZERS,
    RUN_STATUSES,
    canonical,
)
from digitlab.choices import PRUNERS as PRUNERS
from digitlab.data import image_shape
from digitlab.data import split_sizes as dataset_split_sizes
from digitlab.errors import SpecError
from digitlab.validation import building, one_line, register, shown, validate
from digitlab.validation import did_you_mean as did_you_mean
from digitlab.validation import unknown as unknown


# ------------------------------------------------------------------------------------ specs
class _Strict(BaseModel):
    """Unknown keys refused, types strict, numbers finite, instances immutable.

    Built from Python (`Spec(name=..., layers=...)`), a bad value is a one-line `SpecError`
    like one from a file or a flag, not a Pydantic traceback.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _choices_in_any_case(cls, data: Any) -> Any:
        """A choice written in any case is its canonical name when only one name matches
        (`choices.canonical`): `optimizer = "SGD"` is sgd, `metrics = ["Accuracy"]` is
        `["accuracy"]`."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, info in cls.model_fields.items():
            valid = _literal_values(info.annotation)
            value = data.get(name)
            if not valid or value is None:
                continue
            if isinstance(value, list | tuple):
                data[name] = type(value)(canonical(item, valid) for item in value)
            else:
                data[name] = canonical(value, valid)
        return data

    def __init__(self, **data: Any) -> None:
        if building.get():  # a nested model: the outer one reports, with the full location
            super().__init__(**data)
            return
        token = building.set(True)
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise SpecError(one_line(exc, type(self).__name__)) from None
        finally:
            building.reset(token)


def _literal_values(annotation: Any) -> tuple[str, ...]:
    """The names a choice field accepts: its `Literal`'s, or those of the `Literal` in a
    tuple or an optional; () for any other field."""
    if typing.get_origin(annotation) is Literal:
        return typing.get_args(annotation)
    for arg in typing.get_args(annotation):
        if values := _literal_values(arg):
            return values
    return ()


class TrainConfig(_Strict):
    """How to compile and fit. Names are Keras's own (`batch_size`, `validation_split`, ...).

    Every field is a `digitlab train` flag (`--batch-size` for `batch_size`): its `description`
    is the flag's help; `json_schema_extra` may add `flags` (aliases), a `metavar`, and
    `summary="fit"` (`digitlab summary` shows it in its fit part, when set).
    """

    optimizer: Literal[tuple(OPTIMIZERS)] = Field(
        "adam",  # the notebook's choice
        description=f"{', '.join(tuple(OPTIMIZERS)[:-1])} or {tuple(OPTIMIZERS)[-1]}.",
    )
    # None: the optimizer's Keras default (adam: 0.001)
    learning_rate: float | None = Field(
        None,
        gt=0,
        le=100,
        description="The optimizer's step size, e.g. 0.001 [default: the optimizer's own].",
        json_schema_extra={"flags": ["--lr"]},
    )
    learning_rate_schedule: Literal[LEARNING_RATE_SCHEDULES] = Field(
        "constant",  # the notebook's
        description="constant, or cosine (decays to 0 by the end).",
    )
    # Goyal et al. 2017, §2.2: a large batch's rate reached by a linear ramp from 0, so the
    # first updates (the largest gradients) don't throw the weights out of reach.
    warmup_epochs: int = Field(
        0,
        ge=0,
        le=100_000,
        description="Raise the learning rate linearly from 0 over the first N epochs "
        "(Goyal et al. 2017) [default: 0, no warm-up].",
        json_schema_extra={"metavar": "N"},
    )
    loss: Literal[LOSSES] = Field(
        "sparse_categorical_crossentropy",  # integer labels, no one-hot copy
        description="A Keras loss by name; the choices are listed above.",
    )
    metrics: tuple[Literal[METRICS], ...] = Field(
        ("accuracy",), strict=False, description=f"Comma-separated: {', '.join(METRICS)}."
    )
    batch_size: int = Field(
        32,  # Keras's default and the notebook's
        ge=1,
        le=1 << 20,
        description="Mini-batch size.",
        json_schema_extra={"flags": ["-b"], "summary": "fit"},
    )
    epochs: int = Field(
        10,  # the notebook's
        ge=1,
        le=100_000,
        description="Passes over the data.",
        json_schema_extra={"flags": ["-e"], "summary": "fit"},
    )
    # 0: the notebook trains on all 60,000; curves then show training figures only
    validation_split: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Fraction of training data held out, e.g. 0.1.",
        json_schema_extra={"summary": "fit"},
    )
    early_stopping: int | None = Field(
        None,  # patience in epochs on val_loss
        ge=1,
        description="Stop after PATIENCE epochs without a better validation loss "
        "(needs --validation-split).",
        json_schema_extra={"metavar": "PATIENCE"},
    )
    # An exponential moving average of the weights (Keras's `use_ema`), e.g. 0.999: the run
    # keeps the average at the end of the fit. None: the last weights, as the notebook.
    ema_momentum: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Keep a moving average of the weights with this momentum, e.g. 0.999, "
        "and save the average.",
        json_schema_extra={"summary": "fit"},
    )
    seed: int = Field(
        0,  # same seed, same weights and accuracy on CPU
        ge=0,
        lt=MAX_SEED,
        description="Same seed, same weights and accuracy.",
    )
    dataset: Literal[DATASETS] = Field(
        "mnist",
        description=f"{' or '.join(DATASETS)}.",
        json_schema_extra={"flags": ["-d"], "metavar": "NAME"},
    )
    train_samples: int | None = Field(
        None, ge=1, description="Use only the first N training digits (quick trials)."
    )
    # Outlier exposure (Hendrycks, Mazeika & Dietterich 2019): images that are not digits,
    # trained toward equal probabilities for every class (`digitlab.exposure`).
    outlier_exposure: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Also train on SHARE non-digits per digit, toward equal probabilities: "
        "the network learns 'not a digit' (outlier exposure) [default: 0, off].",
        json_schema_extra={"metavar": "SHARE"},
    )

    @field_validator("loss", mode="before")
    @classmethod
    def _normalise_loss(cls, value: Any) -> Any:
        value = canonical(value, (*LOSS_ALIASES, "binary_crossentropy"))  # `MSE` is mse
        if value == "binary_crossentropy":
            raise ValueError(
                "loss binary_crossentropy is for two classes, and digits have 10; "
                "use sparse_categorical_crossentropy or categorical_crossentropy"
            )
        return LOSS_ALIASES.get(value, value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _fits_together(self) -> TrainConfig:
        available = dataset_split_sizes(self.dataset)[0]
        if self.train_samples is not None and self.train_samples > available:
            raise ValueError(
                f"'train_samples' must be at most {available:,}, the training images "
                f"{self.dataset} has, got {self.train_samples:,}"
            )
        if self.outlier_exposure and self.dataset != "mnist":
            raise ValueError(
                "outlier exposure teaches 'not a digit', so it trains on the digits only; "
                "drop --outlier-exposure or use --dataset mnist"
            )
        if self.outlier_exposure and not self.loss.endswith("categorical_crossentropy"):
            raise ValueError(
                f"outlier exposure trains toward equal probabilities with cross-entropy, not "
                f"{self.loss}; use --loss sparse_categorical_crossentropy"
            )
        if self.early_stopping is not None and self.validation_split == 0.0:
            raise ValueError(
                "early stopping watches the validation loss; add --validation-split 0.1"
            )
        return self

    @property
    def one_hot(self) -> bool:
        """Whether labels are one-hot encoded for this loss (every loss but the sparse one),
        as they are with outlier exposure, whose non-digits' targets are 1/classes each."""
        return self.fit_loss != "sparse_categorical_crossentropy"

    @property
    def fit_loss(self) -> str:
        """The loss compiled: `loss`, or its one-hot form with outlier exposure."""
        exposed = self.outlier_exposure and self.loss == "sparse_categorical_crossentropy"
        return "categorical_crossentropy" if exposed else self.loss


def _check_layer(index: int, layer: Any) -> dict[str, Any]:
    """A layer table: a `type` name and Keras arguments; sizes bounded so a typo of 1e8 units
    is a message, not an out-of-memory kill. Keras checks the rest when it builds the layer."""
    where = f"layer {index + 1}"
    if not isinstance(layer, dict):
        raise ValueError(f"{where} must be a table with a 'type', got {shown(layer)}")
    if not all(isinstance(key, str) for key in layer):
        raise ValueError(f"{where}: argument names must be text")
    if not isinstance(layer.get("type"), str):
        raise ValueError(f'{where} needs a \'type\' such as "Dense" or "Dropout"')
    layer = {**layer, "type": canonical(layer["type"], LAYER_TYPES)}  # "dense" is Dense
    if isinstance(layer.get("activation"), str):
        # Keras names every activation in lower case (`model.ACTIVATIONS`, a test holds it),
        # so "ReLU" can only mean relu; `model.build_layer` refuses a name Keras lacks.
        layer = {**layer, "activation": layer["activation"].lower()}
    for key, cap in (("units", MAX_UNITS), ("filters", MAX_FILTERS)):
        if key in layer:
            value = layer[key]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= cap:
                raise ValueError(
                    f"{where} ({layer['type']}): '{key}' must be a whole number from 1 to "
                    f"{cap:,}, got {shown(value)}"
                )
    for key, value in layer.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where} ({layer['type']}): '{key}' must be finite, got {value}")
    return dict(layer)


class Spec(_Strict):
    """A network: its layers as Keras layer configs, and how images are fed to them.

    `layers` holds one dict per layer, `{"type": "Dense", "units": 100, "activation": "relu"}`,
    with Keras's own argument names. `input` says how images are fed: "flat" is the notebook's
    784-vector scaled to [0, 1]; "image" keeps the 28×28×1 picture for convolutional networks.
    """

    name: str = Field(min_length=1, max_length=200)
    layers: tuple[dict[str, Any], ...] = Field(min_length=1, strict=False)
    input: Literal[INPUTS] = "flat"
    train: TrainConfig = TrainConfig()
    description: str = Field("", max_length=2_000)

    @field_validator("layers", mode="before")
    @classmethod
    def _check_layers(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise ValueError("'layers' must be [[layers]] tables")
        if not value:
            raise ValueError("the network has no layers; add [[layers]] tables")
        return tuple(_check_layer(i, layer) for i, layer in enumerate(value))

    @property
    def image_shape(self) -> tuple[int, int]:
        """Height and width of the dataset's images (28×28 for MNIST and Fashion-MNIST)."""
        return image_shape(self.train.dataset)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """What the network's first layer receives: (784,) flat, or (28, 28, 1)."""
        height, width = self.image_shape
        return (height * width,) if self.input == "flat" else (height, width, 1)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict that `Spec.model_validate` turns back into an equal Spec."""
        return self.model_dump(mode="json")

    def replace(self, **fields: Any) -> Spec:
        """A copy with `fields` replaced (a `train` dict updates single training fields),
        validated like any new spec.

        Raises:
            SpecError: a replaced value is invalid.
        """
        data = self.model_dump()
        train = fields.pop("train", None)
        if isinstance(train, TrainConfig):
            train = train.model_dump()
        data.update(fields)
        if train:
            data["train"] = {**data["train"], **train}
        return validate(Spec, data, f"spec '{data.get('name', self.name)}'")


# ------------------------------------------------------------------------------- run files
class _Record(BaseModel):
    """A file digitlab wrote: strict types, but keys a newer version adds are kept, not refused,
    so a run written by digitlab 0.2 still opens in 0.1."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True, allow_inf_nan=False)


class Preprocessing(_Record):
    input: Literal[INPUTS]
    shape: tuple[int, ...] = Field(strict=False)
    scale: float = Field(gt=0)
    # issue 22: frames with a background are levelled before the networks read them
    # (`digitlab.background`); False for a run written before, which reads pixels as they are
    level_background: bool = False


class DatasetRecord(_Record):
    name: Literal[DATASETS]
    source: str = ""
    sha256: dict[str, str] = {}
    class_names: tuple[str, ...] = Field(min_length=2, strict=False)
    train_samples: int = Field(0, ge=0)
    test_samples: int = Field(0, ge=0)


class RunConfig(_Record):
    """A run's `config.json`: everything needed to use the run without the flags that made it."""

    name: str
    created: datetime = Field(strict=False)  # ISO 8601 text in the file
    updated: datetime | None = Field(None, strict=False)
    status: Literal[RUN_STATUSES] = "complete"
    epochs_done: int = Field(ge=0)
    spec: Spec
    preprocessing: Preprocessing
    dataset: DatasetRecord
    seed: int = Field(0, ge=0, lt=MAX_SEED)
    versions: dict[str, str] = {}
    # Calibrated confidence thresholds, stored at training time (see the confidence issue).
    thresholds: dict[str, float] = {}

    @model_validator(mode="after")
    def _fits_together(self) -> RunConfig:
        last = self.spec.layers[-1]
        classes = len(self.dataset.class_names)
        if last.get("units") != classes:
            raise ValueError(
                f"'dataset.class_names' has {classes} names but the output layer has "
                f"{last.get('units')} units"
            )
        if self.spec.train.dataset != self.dataset.name:
            raise ValueError(
                f"'spec.train.dataset' is {self.spec.train.dataset} but 'dataset.name' is "
                f"{self.dataset.name}"
            )
        if tuple(self.preprocessing.shape) != self.spec.input_shape:
            raise ValueError(
                f"'preprocessing.shape' {list(self.preprocessing.shape)} does not match the "
                f"spec's input shape {list(self.spec.input_shape)}"
            )
        return self


class Metrics(_Record):
    """A run's `metrics.json`: training time always; test figures once training completed."""

    epochs: int = Field(0, ge=0)
    train_seconds: float = Field(0.0, ge=0, strict=False)
    epoch_seconds: tuple[float, ...] = Field((), strict=False)
    test_loss: float | None = Field(None, strict=False)
    test_accuracy: float | None = Field(None, ge=0, le=1, strict=False)
    test_errors: int | None = Field(None, ge=0)
    confusion_matrix: tuple[tuple[int, ...], ...] | None = Field(None, strict=False)

    @field_validator("confusion_matrix")
    @classmethod
    def _square(cls, matrix: tuple[tuple[int, ...], ...] | None) -> Any:
        """Rows are true classes, columns predicted ones: classes × classes (the run's config
        knows how many; `runs.read_metrics` checks that)."""
        if matrix is not None and any(len(row) != len(matrix) for row in matrix):
            lengths = ", ".join(str(n) for n in sorted({len(row) for row in matrix}))
            raise ValueError(
                f"must be square, classes × classes; it has {len(matrix)} rows of {lengths} entries"
            )
        return matrix


for _model in (TrainConfig, Spec, Preprocessing, DatasetRecord, RunConfig, Metrics):
    register(_model)
