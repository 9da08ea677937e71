"""From a `Spec` to a compiled Keras model, refusing choices that don't fit before any training.

Layers are Keras's own, built from their config dicts with Keras's own argument names, so a
spec file reads like the notebook's `model.add(Dense(100, activation="sigmoid"))` lines.
"""

from __future__ import annotations

import inspect

import keras
import numpy as np

from digitlab import forward
from digitlab.augment import RandomDegradation, RandomDistortion
from digitlab.choices import LAYER_TYPES
from digitlab.data import NUM_CLASSES
from digitlab.errors import SpecError
from digitlab.forward import PIXEL_SCALE as PIXEL_SCALE  # re-exported: where they used to be
from digitlab.forward import output_activation as output_activation
from digitlab.forward import prepare_inputs as prepare_inputs
from digitlab.forward import to_probabilities as to_probabilities
from digitlab.schema import OPTIMIZERS, Spec, TrainConfig, unknown

CUSTOM_LAYERS = {"RandomDistortion": RandomDistortion, "RandomDegradation": RandomDegradation}
ACTIVATIONS = tuple(
    name
    for name in dir(keras.activations)
    if not name.startswith("_") and name not in {"get", "serialize", "deserialize"}
)
OPTIMIZER_CLASSES = {name: getattr(keras.optimizers, cls) for name, cls in OPTIMIZERS.items()}
FULL_TRAINING_SET = 60_000  # digits in the training sets of MNIST and Fashion-MNIST alike
LearningRateSchedule = keras.optimizers.schedules.LearningRateSchedule


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) < 300 else text[:297] + "..."


def _layer_arguments(cls) -> set[str]:
    params = inspect.signature(cls.__init__).parameters
    return {name for name in params if name not in {"self", "kwargs"}} | {"name", "dtype"}


def build_layer(config: dict, index: int) -> keras.layers.Layer:
    """One Keras layer from `{"type": ..., **arguments}`.

    Raises:
        SpecError: unknown type, unknown argument, or a value Keras refuses.
    """
    where = f"layer {index + 1}"
    config = dict(config)
    kind = config.pop("type", None)
    if kind not in LAYER_TYPES:
        raise SpecError(f"{where}: {unknown('layer type', kind, LAYER_TYPES)}")
    cls = CUSTOM_LAYERS.get(kind) or getattr(keras.layers, kind)
    valid = _layer_arguments(cls)
    for key in config:
        if key not in valid:
            raise SpecError(f"{where} ({kind}): {unknown('argument', key, sorted(valid))}")
    activation = config.get("activation")
    if isinstance(activation, str) and activation not in ACTIVATIONS:
        raise SpecError(f"{where} ({kind}): {unknown('activation', activation, ACTIVATIONS)}")
    try:
        return cls(**config)
    except Exception as exc:  # Keras refusing a value: ValueError, TypeError, AttributeError...
        raise SpecError(f"{where} ({kind}): {_one_line(exc)}") from None


def layer_rows(model: keras.Model) -> list[dict[str, str]]:
    """One row per layer of a built model, for a person: what `model.summary()` shows, plus
    each layer's size and activation, which Keras's summary leaves out.

    Returns:
        Rows with the keys `name`, `type`, `size` ("100 units", "32 filters", "rate 0.2";
        "" for other layers), `activation` ("" for layers without one), `output shape` (of
        one digit, "24×24×16": Keras's summary adds the batch's `None`) and `params`.
    """
    return [
        {
            "name": layer.name,
            "type": type(layer).__name__,
            "size": _size(layer),
            "activation": getattr(getattr(layer, "activation", None), "__name__", ""),
            "output shape": "×".join(str(d) for d in layer.output.shape[1:]),  # one digit's
            "params": f"{layer.count_params():,}",
        }
        for layer in model.layers
    ]


def _size(layer: keras.layers.Layer) -> str:
    for key, form in (("units", "{:g} units"), ("filters", "{:g} filters"), ("rate", "rate {:g}")):
        value = getattr(layer, key, None)  # Dense, Conv2D, Dropout
        if isinstance(value, int | float):
            return form.format(value)
    return ""


def default_learning_rate(optimizer: str) -> float:
    """The learning rate Keras's `optimizer` (a name in `OPTIMIZERS`) uses when none is given,
    read from Keras itself (adam: 0.001)."""
    return inspect.signature(OPTIMIZER_CLASSES[optimizer]).parameters["learning_rate"].default


def build_model(spec: Spec, num_classes: int = NUM_CLASSES) -> keras.Sequential:
    """Build (not compile) the network a spec describes.

    Args:
        spec: the layers and input kind, e.g. `get_preset("seed")`.
        num_classes: units the last Dense layer must have (10 for digits).

    Returns:
        A built `keras.Sequential`, ready for `summary()` or `compile_model`.

    Raises:
        SpecError: a layer is unknown or misconfigured, the layers don't fit together, or
            the output layer isn't a Dense layer with one unit per class.

    Example:
        >>> import digitlab
        >>> model = digitlab.build_model(digitlab.get_preset("seed"))
        >>> model.summary()  # the notebook's 784-512-256-128-10 network
    """
    layers = [build_layer(config, i) for i, config in enumerate(spec.layers)]
    last = spec.layers[-1]
    if last.get("type") != "Dense":
        raise SpecError(
            f"the last layer must be Dense with {num_classes} units (one per class), "
            f"got {last.get('type')}"
        )
    if last.get("units") != num_classes:
        raise SpecError(
            f"the output layer has {last.get('units')} units but the data has "
            f"{num_classes} classes; set units = {num_classes} on the last Dense layer"
        )
    try:
        return keras.Sequential([keras.Input(shape=spec.input_shape), *layers], name=spec.name)
    except MemoryError:
        raise SpecError(_TOO_LARGE) from None
    except Exception as exc:  # e.g. Conv2D on the flat 784 input: Keras's ValueError
        if "RESOURCE_EXHAUSTED" in str(exc) or "out of memory" in str(exc).lower():
            raise SpecError(_TOO_LARGE) from None
        raise SpecError(
            f"the layers don't fit together on {spec.input} input "
            f"{'×'.join(map(str, spec.input_shape))}: {_one_line(exc)}"
        ) from None


_TOO_LARGE = "the network's weights don't fit in memory; use fewer or smaller layers"


def _learning_rate(train: TrainConfig, train_samples: int | None) -> float | LearningRateSchedule:
    """The optimizer's `learning_rate`: a number, or a schedule spanning every step of the fit.

    A warm-up (`warmup_epochs`) ramps the rate linearly from 0 to its value over those epochs'
    steps (Keras's `CosineDecay` warm-up), then holds it (constant: `alpha=1`, no decay) or
    decays it to 0 over the remaining steps (cosine).
    """
    rate = train.learning_rate
    if rate is None:  # the optimizer's own Keras default, which a schedule starts from
        rate = default_learning_rate(train.optimizer)
    if train.learning_rate_schedule == "constant" and not train.warmup_epochs:
        return rate
    samples = train_samples or train.train_samples or FULL_TRAINING_SET
    fitted = int(np.floor(samples * (1.0 - train.validation_split)))  # as fit splits it
    per_epoch = -(-fitted // train.batch_size)  # a last partial batch is a step
    steps = per_epoch * train.epochs
    if not train.warmup_epochs:
        return keras.optimizers.schedules.CosineDecay(rate, decay_steps=max(steps, 1))
    warmup = per_epoch * train.warmup_epochs
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=max(steps - warmup, 1),
        alpha=1.0 if train.learning_rate_schedule == "constant" else 0.0,
        warmup_target=rate,
        warmup_steps=warmup,
    )


def compile_model(
    model: keras.Model,
    spec: Spec,
    num_classes: int = NUM_CLASSES,
    *,
    train_samples: int | None = None,
) -> TrainConfig:
    """Compile `model` with the spec's optimizer, learning rate schedule, loss and metrics.

    A linear output with a cross-entropy loss is compiled with `from_logits=True`, so a user
    who leaves the softmax out still trains the network they meant.

    Args:
        model: the built network, e.g. from `build_model(spec)`.
        spec: the spec whose `train` config to compile with.
        num_classes: the number of classes, for the precision and recall metrics (default 10).
        train_samples: the samples `fit` will get, validation split included, which a
            decaying schedule needs to count its steps (default: the spec's `train_samples`,
            else the 60,000 digits of a full training set).

    Returns:
        The spec's training config.

    Raises:
        SpecError: an unknown or mismatched optimizer, schedule, loss or metric.
    """
    train = spec.train
    averaging = (
        {} if train.ema_momentum is None else {"use_ema": True, "ema_momentum": train.ema_momentum}
    )
    optimizer = OPTIMIZER_CLASSES[train.optimizer](
        learning_rate=_learning_rate(train, train_samples), **averaging
    )
    loss: str | keras.losses.Loss = train.fit_loss
    if train.fit_loss.endswith("crossentropy") and output_activation(spec) == "linear":
        loss_class = {
            "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
            "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
        }[train.fit_loss]
        loss = loss_class(from_logits=True)
    # With outlier exposure a non-digit's target is 1/classes for each: no class is right, so
    # the metrics count the digits only (the confusion metrics leave such rows out themselves).
    accuracy = DigitAccuracy() if train.outlier_exposure else "accuracy"
    metrics = [
        accuracy
        if m == "accuracy"
        else {"precision": MacroPrecision, "recall": MacroRecall}[m](num_classes=num_classes)
        for m in train.metrics
    ]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    return train


@keras.saving.register_keras_serializable(package="digitlab")
class DigitAccuracy(keras.metrics.Mean):
    """Accuracy on one-hot targets over the digits only: a row whose largest target is below
    1/2 (outlier exposure's non-digits, 1/classes each) is left out. Logged as `accuracy`."""

    def __init__(self, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        right = ops.cast(ops.argmax(y_true, axis=-1) == ops.argmax(y_pred, axis=-1), "float32")
        digit = ops.cast(ops.max(y_true, axis=-1) > 0.5, "float32")
        return super().update_state(right, sample_weight=digit)


class _ConfusionMetric(keras.metrics.Metric):
    """Accumulates a confusion matrix over batches; works with integer or one-hot labels."""

    def __init__(
        self, num_classes: int = NUM_CLASSES, class_id: int | None = None, name=None, **kwargs
    ):
        super().__init__(name=name or self.default_name, **kwargs)
        self.num_classes = num_classes
        self.class_id = class_id
        self.matrix = self.add_variable(
            shape=(num_classes, num_classes), initializer="zeros", name="matrix"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        ops = keras.ops
        digit = 1.0
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == self.num_classes:
            digit = ops.cast(ops.max(y_true, axis=-1, keepdims=True) > 0.5, "float32")
            y_true = ops.argmax(y_true, axis=-1)  # a non-digit (outlier exposure) counts nowhere
        y_true = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), self.num_classes)
        y_true = y_true * digit
        y_pred = ops.one_hot(ops.argmax(y_pred, axis=-1), self.num_classes)
        self.matrix.assign_add(ops.matmul(ops.transpose(y_true), y_pred))

    def reset_state(self):
        self.matrix.assign(keras.ops.zeros(self.matrix.shape))

    def _per_class(self, correct, total):
        ops = keras.ops
        value = ops.divide_no_nan(correct, total)
        return ops.mean(value) if self.class_id is None else value[self.class_id]

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "class_id": self.class_id}


@keras.saving.register_keras_serializable(package="digitlab")
class MacroPrecision(_ConfusionMetric):
    """Precision for integer labels: macro-averaged over classes, or one class by `class_id`."""

    default_name = "precision"

    def result(self):
        diagonal = keras.ops.diagonal(self.matrix)
        return self._per_class(diagonal, keras.ops.sum(self.matrix, axis=0))


@keras.saving.register_keras_serializable(package="digitlab")
class MacroRecall(_ConfusionMetric):
    """Recall for integer labels: macro-averaged over classes, or one class by `class_id`."""

    default_name = "recall"

    def result(self):
        diagonal = keras.ops.diagonal(self.matrix)
        return self._per_class(diagonal, keras.ops.sum(self.matrix, axis=1))


def probability_function(model: keras.Model, spec: Spec):
    """uint8 images (N×28×28 or N×784, 0–255) → class probabilities, with the spec's own
    preprocessing and the forward pass compiled once (`fastfit.predictor`: ~0.06 ms a digit
    instead of `predict_on_batch`'s ~0.2 ms). For weights that no longer change: a model
    being saved, or a saved run that `forward.load_forward` can't run in NumPy."""
    from digitlab.fastfit import predictor

    return forward.probability_function(predictor(model), spec)
