"""A saved network's forward pass in NumPy: predictions without importing Keras or JAX.

Importing Keras and JAX and loading model.keras take seconds; the forward pass of a network
this size takes milliseconds (issue 23). A model.keras file is a zip holding `config.json`
(every layer's resolved Keras config) and `model.weights.h5` (each layer's variables under
`layers/<snake_case class name>[_N]/vars/<i>`, the names Keras's saving_lib gives them).
`load_forward` reads the two and returns a function computing what `model.predict` does, or
None when a layer, activation or setting is one it doesn't run; callers then load the model
with Keras (`Run.predict_proba`). tests/test_forward.py checks every preset against Keras
`predict` to 1e-5.

Layers at inference: augmentation and noise layers are the identity (Keras's
`training=False`); Dropout too. Also here, so that reading a run's answers needs no Keras:
the notebook's input scaling (`prepare_inputs`) and outputs → probabilities
(`to_probabilities`), which `digitlab.model` re-exports.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from digitlab.data import PIXEL_MAX

PIXEL_SCALE = 1 / PIXEL_MAX  # the notebook's normalisation: pixels 0–255 to 0–1
IDENTITY_LAYERS = frozenset(  # no effect at inference
    {
        "InputLayer",
        "Dropout",
        "SpatialDropout2D",
        "GaussianNoise",
        "RandomRotation",
        "RandomTranslation",
        "RandomZoom",
        "RandomDistortion",
        "RandomDegradation",
    }
)
CHUNK = 1024  # images per forward pass: bounds the memory a convolution's output takes


def _softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-x), as XLA computes it: far below 0 it stays a tiny positive number, whose
    ratios to the other outputs are the probabilities (`to_probabilities`)."""
    with np.errstate(over="ignore"):  # e^-x = inf: the sigmoid is 0, as in XLA
        return 1 / (1 + np.exp(-x))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0),
    "relu6": lambda x: np.clip(x, 0, 6),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softmax": _softmax,
    "log_softmax": lambda x: np.log(_softmax(x)),
    "softplus": lambda x: np.logaddexp(x, 0).astype(x.dtype),
    "silu": lambda x: x * _sigmoid(x),
    "swish": lambda x: x * _sigmoid(x),
}


class Unsupported(Exception):
    """A layer, activation or setting this module doesn't run: Keras must."""


def _activation(config: dict) -> Callable[[np.ndarray], np.ndarray]:
    name = config.get("activation") or "linear"
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise Unsupported(f"activation {name!r}")
    return ACTIVATIONS[name]


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def padding_of(shape: tuple[int, ...], size, strides, padding: str) -> list[tuple[int, int]]:
    """The zeros a window of `size` pads an N×H×W×C input of `shape` with on each side of
    each axis: none for "valid"; for "same" XLA's SAME, the total split, the odd pixel after."""
    if padding == "valid":
        return [(0, 0)] * 4
    if padding != "same":
        raise Unsupported(f"padding {padding!r}")
    pads = [(0, 0)]
    for n, k, s in zip(shape[1:3], _pair(size), _pair(strides), strict=True):
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return [*pads, (0, 0)]


def _windows(x: np.ndarray, size, strides, padding: str):
    """Each offset (i, j) of a size[0]×size[1] window and the slice of `x` (N×H×W×C) it sees
    at every output position: what a convolution sums and a pooling reduces."""
    (kh, kw), (sh, sw) = _pair(size), _pair(strides)
    if padding != "valid":
        x = np.pad(x, padding_of(x.shape, size, strides, padding))
    out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    for i in range(kh):
        for j in range(kw):
            yield (i, j), x[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw]


def _channels_last(config: dict) -> None:
    if config.get("data_format") not in (None, "channels_last"):
        raise Unsupported(f"data_format {config.get('data_format')!r}")


def _conv2d(config: dict, weights: list[np.ndarray]):
    _channels_last(config)
    if _pair(config.get("dilation_rate", 1)) != (1, 1) or config.get("groups", 1) != 1:
        raise Unsupported("dilated or grouped convolution")
    kernel, *bias = weights
    act = _activation(config)
    if kernel.ndim != 4 or kernel.shape[-1] != config["filters"]:
        raise ValueError(f"Conv2D kernel {kernel.shape}")

    def conv(x):
        out = None
        for (i, j), part in _windows(x, kernel.shape[:2], config["strides"], config["padding"]):
            term = part @ kernel[i, j]
            out = term if out is None else out + term
        return act(out + bias[0] if bias else out)

    return conv


def _pooling(kind: str, config: dict):
    _channels_last(config)
    if config.get("padding") != "valid":
        raise Unsupported("pooling with padding")
    reduce = np.maximum if kind == "MaxPooling2D" else np.add
    size, strides = config["pool_size"], config.get("strides") or config["pool_size"]

    def pool(x):
        out = None
        for _, part in _windows(x, size, strides, "valid"):
            out = part if out is None else reduce(out, part)
        return out if kind == "MaxPooling2D" else out / np.float32(np.prod(_pair(size)))

    return pool


def _normalization(kind: str, config: dict, weights: list[np.ndarray]):
    axis = config.get("axis", -1)
    if axis not in (-1, [-1]) or config.get("rms_scaling"):
        raise Unsupported(f"{kind} over axis {axis}")
    names = ["gamma"] * bool(config.get("scale", True)) + ["beta"] * bool(
        config.get("center", True)
    )
    if kind == "BatchNormalization":
        names += ["moving_mean", "moving_variance"]
    if len(weights) != len(names):
        raise ValueError(f"{kind} has {len(weights)} variables, expected {len(names)}")
    var = dict(zip(names, weights, strict=True))
    epsilon = np.float32(config["epsilon"])

    def normalize(x):
        if kind == "BatchNormalization":
            mean, variance = var["moving_mean"], var["moving_variance"]
        else:
            mean, variance = x.mean(axis=-1, keepdims=True), x.var(axis=-1, keepdims=True)
        scale = 1 / np.sqrt(variance + epsilon)
        if "gamma" in var:
            scale = scale * var["gamma"]
        return (x - mean) * scale + var.get("beta", np.float32(0))

    return normalize


def _step(kind: str, config: dict, weights: list[np.ndarray]) -> Callable | None:
    """The function one layer computes at inference; None for the identity."""
    if kind in IDENTITY_LAYERS:
        return None
    if kind == "Dense":
        kernel, *bias = weights
        if kernel.ndim != 2 or kernel.shape[1] != config["units"] or len(bias) > 1:
            raise ValueError(f"Dense kernel {kernel.shape}")
        act = _activation(config)
        return lambda x: act(x @ kernel + bias[0] if bias else x @ kernel)
    if kind == "Flatten":
        return lambda x: x.reshape(len(x), -1)
    if kind == "Reshape":
        return lambda x: x.reshape(len(x), *config["target_shape"])
    if kind == "Activation":
        return _activation(config)
    if kind == "Rescaling":
        scale, offset = (np.float32(config[key]) for key in ("scale", "offset"))
        return lambda x: x * scale + offset
    if kind == "Conv2D":
        return _conv2d(config, weights)
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        return _pooling(kind, config)
    if kind == "GlobalAveragePooling2D":
        _channels_last(config)
        return lambda x: x.mean(axis=(1, 2), keepdims=bool(config.get("keepdims")))
    if kind in ("BatchNormalization", "LayerNormalization"):
        return _normalization(kind, config, weights)
    raise Unsupported(f"layer {kind}")


def _snake_case(name: str) -> str:
    """Keras's `naming.to_snake_case`, which names each layer's group in the weights file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _layer_weights(h5, layers: list[dict]) -> list[list[np.ndarray]]:
    """Each layer's variables in the order Keras created them, named as saving_lib names
    them: the class name in snake case, then _1, _2, ... for the next of the same class."""
    used: dict[str, int] = {}
    found = []
    for layer in layers:
        name = _snake_case(layer["class_name"])
        used[name] = used.get(name, -1) + 1
        if layer["class_name"] in IDENTITY_LAYERS:  # no weights (a random layer's seed state)
            found.append([])
            continue
        group = h5.get(f"layers/{name}_{used[name]}" if used[name] else f"layers/{name}")
        vars_ = group.get("vars") if group is not None else None
        arrays = [np.asarray(vars_[str(i)]) for i in range(len(vars_))] if vars_ else []
        if any(a.dtype != np.float32 for a in arrays):
            raise Unsupported("weights that are not float32")
        found.append(arrays)
    return found


def read_model_file(path: str | Path) -> tuple[list[dict], list[list[np.ndarray]]]:
    """The layers (Keras configs, the input layer first) and their variables in a Sequential
    model.keras file.

    Raises:
        Unsupported: not a Sequential model of float32 layers.
        ValueError, KeyError, OSError, zipfile.BadZipFile: a file that is not model.keras.
    """
    import h5py  # ~0.1 s; only here, where a model file is read

    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
        weights = archive.read("model.weights.h5")
    if config.get("class_name") != "Sequential" or config.get("module") != "keras":
        raise Unsupported(f"model class {config.get('class_name')!r}")
    layers = config["config"]["layers"]
    with h5py.File(io.BytesIO(weights), "r") as h5:
        return layers, _layer_weights(h5, layers)


def load_forward(path: str | Path) -> Callable[[np.ndarray], np.ndarray] | None:
    """What `model.predict` computes for the model saved at `path` (float32 inputs as
    `prepare_inputs` makes them), in NumPy; None if a layer or setting is one it doesn't
    run, or the file doesn't read as it should (Keras then loads it, or says what is wrong).
    """
    try:
        layers, weights = read_model_file(path)
        input_shape = tuple(layers[0]["config"]["batch_shape"][1:])
        if layers[0]["class_name"] != "InputLayer" or None in input_shape:
            raise Unsupported("no fixed input shape")
        steps = [
            _step(lay["class_name"], lay["config"], w)
            for lay, w in zip(layers, weights, strict=True)
        ]
        steps = [step for step in steps if step is not None]

        def forward(x: np.ndarray) -> np.ndarray:
            outputs = []
            for start in range(0, max(len(x), 1), CHUNK):
                values = np.asarray(x[start : start + CHUNK], np.float32)
                for step in steps:
                    values = step(values)
                outputs.append(values)
            return np.concatenate(outputs)

        forward(np.zeros((1, *input_shape), np.float32))  # shapes that don't fit fail here
        return forward
    except (Unsupported, ValueError, KeyError, TypeError, IndexError, OSError, zipfile.BadZipFile):
        return None


def output_activation(spec) -> str:
    """The last layer's activation name ("linear" when none is given) of a `Spec`."""
    activation = spec.layers[-1].get("activation") or "linear"
    return activation if isinstance(activation, str) else "linear"


def to_probabilities(outputs: np.ndarray, activation: str) -> np.ndarray:
    """Turn the output layer's values into class probabilities that sum to 1.

    Softmax outputs are already probabilities. Sigmoid (the notebook's output) and other
    positive outputs are normalised by their sum, exactly as Keras's cross-entropy does
    internally; linear outputs are logits and go through softmax.
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    if activation == "softmax":
        return outputs
    if activation in {"linear", "tanh", "log_softmax"} or (outputs < 0).any():
        shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    total = outputs.sum(axis=1, keepdims=True)
    return np.divide(
        outputs, total, out=np.full_like(outputs, 1 / outputs.shape[1]), where=total > 0
    )


def prepare_inputs(images: np.ndarray, input_shape: tuple[int, ...] | str = "flat") -> np.ndarray:
    """The notebook's preprocessing: flatten to 784 (or keep 28×28×1) and scale by 1/255.

    Scaling happens in float32 from the start: `x / 255` on uint8 would make a float64 copy
    twice the size, which is most of the notebook's memory peak.

    Args:
        images: uint8 pixels 0–255, shaped N×H×W or N×(H·W).
        input_shape: what the network takes, `spec.input_shape`: (784,) or (28, 28, 1). Or
            "flat" (N×(H·W)) and "image" (N×H×W×1) to keep the images' own size.
    """
    images = np.asarray(images)
    if input_shape == "flat":
        input_shape = (int(np.prod(images.shape[1:])),)
    elif input_shape == "image":
        input_shape = (*images.shape[1:3], 1)
    x = images.reshape((-1, *input_shape)).astype(np.float32)
    x *= np.float32(PIXEL_SCALE)
    return x


def probability_function(forward: Callable[[np.ndarray], np.ndarray], spec):
    """uint8 images (N×28×28 or N×784, 0–255) → class probabilities, through `forward`
    (`load_forward`'s, or a compiled Keras model's) with the spec's own preprocessing."""
    activation = output_activation(spec)

    def predict_proba(images: np.ndarray) -> np.ndarray:
        outputs = forward(prepare_inputs(images, spec.input_shape))
        return to_probabilities(np.asarray(outputs), activation)

    return predict_proba
