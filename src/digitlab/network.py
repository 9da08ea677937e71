"""A spec's network on paper: each layer's output shape and parameters, without Keras.

`digitlab summary` prints a network's layers before any training. Building the Keras model
only to read them cost importing Keras and JAX, ~3 s of summary's 5 (issue 23), while the
shapes and parameter counts of the layers digits use are arithmetic. `layer_table` does that
arithmetic for a spec whose every layer and argument it knows, applying Keras's defaults and
Keras's checks, and returns None for anything else (a layer type or argument it doesn't
know, shapes that don't fit, an output layer that isn't Dense with one unit per class):
`describe` then builds the model in Keras, which says what is wrong, if anything.
tests/test_instant.py holds every preset and a network of the other layers to Keras's own
rows (`model.layer_rows`) and counts, and each check's edge to Keras's refusal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

from digitlab.choices import DEGRADATIONS
from digitlab.forward import _snake_case
from digitlab.schema import Spec

# Keras's name for each activation it has, `keras.activations.get(name).__name__` (a test
# holds this table to Keras's): what the table's activation column shows.
ACTIVATION_NAMES = {
    **{name: name for name in (
        "celu", "elu", "exponential", "gelu", "glu", "hard_shrink", "hard_sigmoid", "hard_silu",
        "hard_tanh", "leaky_relu", "linear", "log_sigmoid", "log_softmax", "mish", "relu",
        "relu6", "selu", "sigmoid", "silu", "soft_shrink", "softmax", "softplus", "softsign",
        "sparse_plus", "sparse_sigmoid", "sparsemax", "squareplus", "tanh", "tanh_shrink",
        "threshold",
    )},
    "hard_swish": "hard_silu",
    "swish": "silu",
}  # fmt: skip
# Each optimizer's own learning rate in Keras, used when a spec gives none (a test holds it
# to `model.default_learning_rate`).
DEFAULT_LEARNING_RATES = {
    "adam": 0.001,
    "sgd": 0.01,
    "rmsprop": 0.001,
    "adagrad": 0.001,
    "adamw": 0.001,
    "nadam": 0.001,
}
# RandomDistortion's bounds (augment.py refuses a value outside them); elastic_sigma > 0.
DISTORTION_LIMITS = {"rotation": 90, "scale": 0.9, "shear": 60, "shift": 14, "elastic_alpha": 100}
MAX_PARAMS = 100_000_000  # beyond this, Keras allocates the weights (or refuses in one line)

# The arguments each known layer may take; any other leaves the table to Keras.
ARGUMENTS: dict[str, frozenset[str]] = {
    kind: frozenset(names)
    for kind, names in {
        "Dense": ("units", "activation", "use_bias"),
        "Conv2D": ("filters", "kernel_size", "strides", "padding", "activation", "use_bias"),
        "Dropout": ("rate", "seed"),
        "SpatialDropout2D": ("rate", "seed"),
        "Flatten": (),
        "Activation": ("activation",),
        "MaxPooling2D": ("pool_size", "strides", "padding"),
        "AveragePooling2D": ("pool_size", "strides", "padding"),
        "GlobalAveragePooling2D": ("keepdims",),
        "BatchNormalization": ("momentum", "epsilon", "center", "scale"),
        "LayerNormalization": ("epsilon", "center", "scale"),
        "Rescaling": ("scale", "offset"),
        "Reshape": ("target_shape",),
        "RandomDistortion": (*DISTORTION_LIMITS, "elastic_sigma", "seed"),
        "RandomDegradation": ("probability", "kinds", "seed"),
    }.items()
}
REQUIRED = {
    "Dense": ("units",),
    "Conv2D": ("filters", "kernel_size"),
    "Dropout": ("rate",),
    "SpatialDropout2D": ("rate",),
    "Activation": ("activation",),
    "AveragePooling2D": ("pool_size",),  # MaxPooling2D's defaults to 2
    "Rescaling": ("scale",),
    "Reshape": ("target_shape",),
}


class _Unknown(Exception):
    """Something the arithmetic doesn't know or Keras would refuse: Keras decides."""


@dataclass(frozen=True)
class LayerTable:
    """A network's layers as `digitlab summary` prints them.

    `rows`: one per layer, with the keys of `model.layer_rows` (`name`, `type`, `size`,
    `activation`, `output shape`, `params`); `params` and `trainable`: the network's counts.
    """

    name: str
    rows: list[dict[str, str]]
    params: int
    trainable: int


@dataclass(frozen=True)
class _Layer:
    shape: tuple[int, ...]  # one digit's output shape
    params: int = 0
    trainable: int = 0
    size: str = ""
    activation: str = ""


def describe(spec: Spec, num_classes: int) -> LayerTable:
    """The layer table of `spec`'s network: by arithmetic (`layer_table`) where it can, else
    from the Keras model `model.build_model` builds.

    Raises:
        SpecError: as `build_model` does, for a spec Keras can't build.
    """
    table = layer_table(spec, num_classes)
    if table is not None:
        return table
    from digitlab.model import build_model, layer_rows

    model = build_model(spec, num_classes=num_classes)
    trainable = sum(math.prod(weight.shape) for weight in model.trainable_weights)
    return LayerTable(model.name, layer_rows(model), model.count_params(), trainable)


def layer_table(spec: Spec, num_classes: int) -> LayerTable | None:
    """The table Keras's model of `spec` gives (as a fresh process names its layers: dense,
    dense_1, ...), computed without Keras; None where Keras must build the model to know."""
    try:
        return _table(spec, num_classes)
    except _Unknown:
        return None


def _table(spec: Spec, num_classes: int) -> LayerTable:
    last = spec.layers[-1]
    if last.get("type") != "Dense" or last.get("units") != num_classes or "/" in spec.name:
        raise _Unknown  # build_model's one-line refusals (Keras refuses a "/" in a name)
    shape, rows, used = tuple(spec.input_shape), [], {}
    params = trainable = 0
    for config in spec.layers:
        kind = config.get("type")
        arguments = {key: value for key, value in config.items() if key != "type"}
        if kind not in ARGUMENTS or not ARGUMENTS[kind].issuperset(arguments):
            raise _Unknown
        if any(key not in arguments for key in REQUIRED.get(kind, ())):
            raise _Unknown
        layer = LAYERS[kind](arguments, shape)
        prefix = _snake_case(kind)
        name = f"{prefix}_{used[prefix]}" if prefix in used else prefix  # Keras's auto names
        used[prefix] = used.get(prefix, 0) + 1
        rows.append(
            {
                "name": name,
                "type": kind,
                "size": layer.size,
                "activation": layer.activation,
                "output shape": "×".join(str(d) for d in layer.shape),
                "params": f"{layer.params:,}",
            }
        )
        shape, params, trainable = layer.shape, params + layer.params, trainable + layer.trainable
    if params > MAX_PARAMS:
        raise _Unknown
    return LayerTable(spec.name, rows, params, trainable)


def _dense(arguments: dict[str, Any], shape: tuple[int, ...]) -> _Layer:
    units, bias = arguments["units"], _flag(arguments, "use_bias", True)
    count = shape[-1] * units + units * bias
    return _Layer((*shape[:-1], units), count, count, f"{units:g} units", _activation(arguments))


def _conv2d(arguments: dict[str, Any], shape: tuple[int, ...]) -> _Layer:
    height, width, channels = _image(shape)
    filters, bias = arguments["filters"], _flag(arguments, "use_bias", True)
    kernel = _pair(arguments["kernel_size"])
    out = _windows((height, width), kernel, _pair(arguments.get("strides", 1)), arguments)
    count = math.prod(kernel) * channels * filters + filters * bias
    return _Layer((*out, filters), count, count, f"{filters:g} filters", _activation(arguments))


def _dropout(arguments: dict[str, Any], shape: tuple[int, ...], *, image: bool) -> _Layer:
    rate = _number(arguments["rate"])
    if not 0 <= rate <= 1 or not _seed(arguments):
        raise _Unknown  # Keras: rate must be between 0 and 1
    return _Layer(_image(shape) if image else shape, size=f"rate {rate:g}")


def _pooling(arguments: dict[str, Any], shape: tuple[int, ...]) -> _Layer:
    height, width, channels = _image(shape)
    pool, strides = _pair(arguments.get("pool_size", 2)), arguments.get("strides")
    strides = pool if strides is None else _pair(strides)
    return _Layer((*_windows((height, width), pool, strides, arguments), channels))


def _normalization(arguments: dict[str, Any], shape: tuple[int, ...], *, moving: bool) -> _Layer:
    """Batch or layer normalization over the last axis: a scale and an offset per channel
    (unless `scale` or `center` is off), and batch norm's moving mean and variance."""
    for key in ("momentum", "epsilon"):
        if key in arguments:
            _number(arguments[key])
    learned = (_flag(arguments, "center", True) + _flag(arguments, "scale", True)) * shape[-1]
    return _Layer(shape, learned + 2 * shape[-1] * moving, learned)


def _reshape(arguments: dict[str, Any], shape: tuple[int, ...]) -> _Layer:
    target = arguments["target_shape"]
    if not isinstance(target, list | tuple) or not all(_whole(d) and d > 0 for d in target):
        raise _Unknown  # -1 (Keras infers it) and other forms: Keras decides
    if math.prod(target) != math.prod(shape):
        raise _Unknown
    return _Layer(tuple(target))


def _distortion(arguments: dict[str, Any], shape: tuple[int, ...]) -> _Layer:
    """digitlab's RandomDistortion: images in, images out, no weights."""
    for key, most in DISTORTION_LIMITS.items():
        if not 0 <= _number(arguments.get(key, 0.0)) <= most:
            raise _Unknown
    if not _number(arguments.get("elastic_sigma", 4.0)) > 0 or not _seed(arguments):
        raise _Unknown
    return _Layer(_image(shape))


def _degradation(arguments: dict[str, Any], shape: tuple[int, ...]) -> _Layer:
    """digitlab's RandomDegradation: images in, images out, no weights."""
    kinds = arguments.get("kinds", DEGRADATIONS)
    if not 0 <= _number(arguments.get("probability", 0.5)) <= 1 or not _seed(arguments):
        raise _Unknown
    if not isinstance(kinds, list | tuple) or not kinds or not set(kinds) <= set(DEGRADATIONS):
        raise _Unknown
    return _Layer(_image(shape))


def _rescaling(arguments: dict[str, Any], shape: tuple[int, ...]) -> _Layer:
    _number(arguments["scale"]), _number(arguments.get("offset", 0.0))
    return _Layer(shape)


def _global_pooling(arguments: dict[str, Any], shape: tuple[int, ...]) -> _Layer:
    channels = _image(shape)[2]
    return _Layer((1, 1, channels) if _flag(arguments, "keepdims", False) else (channels,))


# Each known layer: (its arguments, the input's shape) -> its output shape, weights and labels.
LAYERS = {
    "Dense": _dense,
    "Conv2D": _conv2d,
    "Dropout": lambda a, shape: _dropout(a, shape, image=False),
    "SpatialDropout2D": lambda a, shape: _dropout(a, shape, image=True),
    "Flatten": lambda a, shape: _Layer((math.prod(shape),)),
    "Activation": lambda a, shape: _Layer(shape, activation=_activation(a)),
    "MaxPooling2D": _pooling,
    "AveragePooling2D": _pooling,
    "GlobalAveragePooling2D": _global_pooling,
    "BatchNormalization": lambda a, shape: _normalization(a, shape, moving=True),
    "LayerNormalization": lambda a, shape: _normalization(a, shape, moving=False),
    "Rescaling": _rescaling,
    "Reshape": _reshape,
    "RandomDistortion": _distortion,
    "RandomDegradation": _degradation,
}


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise _Unknown
    return float(value)


def _flag(arguments: dict[str, Any], key: str, default: bool) -> bool:
    value = arguments.get(key, default)
    if not isinstance(value, bool):
        raise _Unknown
    return value


def _seed(arguments: dict[str, Any]) -> bool:
    return arguments.get("seed") is None or _whole(arguments["seed"])


def _activation(arguments: dict[str, Any]) -> str:
    name = arguments.get("activation") or "linear"  # None: Keras's linear
    if not isinstance(name, str) or name not in ACTIVATION_NAMES:
        raise _Unknown
    return ACTIVATION_NAMES[name]


def _pair(value: Any) -> tuple[int, int]:
    """A window's height and width (an int for both, or two), each at least 1."""
    pair = (value, value) if _whole(value) else value
    if not isinstance(pair, list | tuple) or len(pair) != 2:
        raise _Unknown
    if not all(_whole(v) and v >= 1 for v in pair):
        raise _Unknown
    return tuple(pair)


def _image(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise _Unknown  # Keras refuses an image layer on flat input
    return shape


def _windows(size, window, strides, arguments: dict[str, Any]) -> tuple[int, int]:
    """The output height and width of a convolution or pooling, as Keras computes them."""
    padding = arguments.get("padding", "valid")
    if padding == "same":
        return tuple(-(-n // s) for n, s in zip(size, strides, strict=True))
    if padding != "valid" or any(n < w for n, w in zip(size, window, strict=True)):
        raise _Unknown
    return tuple((n - w) // s + 1 for n, w, s in zip(size, window, strides, strict=True))
