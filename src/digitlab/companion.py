"""The companion: a robust second reading of every digit, trained beside the run's verifiers.

The verdict (`digitlab.confidence`) flags an answer as "unsure" when the companion gives it
too little probability. The companion is the `mlp-robust` preset's network (two relu layers
of 512, trained on digits randomly distorted and, half of them, degraded: noise, specks,
blur, thicker or thinner strokes, outline, straight marks, gaps, half resolution), with
straight marks across half of them besides (`MARKS`), trained the preset's way on the run's
own training digits.
It reads a rotated, blurred, broken or crossed-out digit better than the notebook's network
does, and where the two disagree one of them is wrong: on MNIST-C's corruptions this fourth
score raised the seed preset's confident answers to at least 98% right on all 15, where
margin and verifiers fell short on rotate, glass blur, Canny edges and zigzag
(benchmarks/RESULTS.md, "The verdict under shift": the companion, then the companion taught
marks).

Like a verifier, it depends on the training digits only, not on the run's network:
`cached_companion` trains it once per set of digits (`make run`'s first run, on 54,000
digits, took 179 s on a 2-core machine; 87 s before the companion) and keeps it in
`$XDG_CACHE_HOME/digitlab/companions/`. A run keeps its Dense weights in
confidence.npz (`companion_kernel_0`, …); `companion_probabilities` is their forward pass in
NumPy (dropout and augmentation are the identity at inference). A run with fewer than
`MIN_DIGITS` training digits has no companion: its verdict is the margin and verifiers'.
"""

from __future__ import annotations

import numpy as np

from digitlab.background import level_background
from digitlab.forward import ACTIVATIONS, prepare_inputs
from digitlab.presets import get_preset
from digitlab.verifiers import cached_weights, weights_key

PRESET = "mlp-robust"  # the companion's layers and training, with `MARKS` added
# One more degradation, on half the digits: one to three straight marks across the frame,
# as ruled paper, an underline or a strike-through leave. A mark that completes another
# digit (a 7's zigzag base read as a 2's) is the confident mistake the other readers share;
# this companion learns that a mark is not a stroke (benchmarks/RESULTS.md, "The verdict
# under shift": the companion taught marks).
MARKS = {"type": "RandomDegradation", "kinds": ["strokes"], "probability": 0.5}
LAYERS = 3  # Dense layers: two hidden, then the logits
WEIGHTS = tuple(f"{kind}_{i}" for i in range(LAYERS) for kind in ("kernel", "bias"))
MIN_DIGITS = 10_000  # fewer training digits: no companion (a quick run would wait minutes)
SEED = 0
VERSION = 2  # of what the same digits give: bump it when the network or its training change


def train_companion(
    digits: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    level: bool = False,
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Fit the companion (Keras, seed `SEED`: the same digits give the same weights).

    Args:
        digits: uint8 N×28×28 training digits (the run's own).
        labels: their classes, 0 … num_classes − 1.
        level: the run levels backgrounds: the companion learns from levelled digits.

    Returns:
        The Dense weights (`companion_kernel_0`, … for `Run.store_calibration`) and
        `{"digits": N}`.
    """
    model = fitted_model(digits, labels, num_classes, level)
    return dense_weights(model), {"digits": len(digits)}


def companion_spec():
    """The companion's `Spec`: `PRESET`'s, with `MARKS` after its own degradation."""
    spec = get_preset(PRESET)
    at = [layer["type"] for layer in spec.layers].index("Flatten")
    return spec.replace(layers=[*spec.layers[:at], MARKS, *spec.layers[at:]])


def fitted_model(digits, labels, num_classes: int, level: bool = False, epochs: int | None = None):
    """The companion as a trained Keras model (`train_companion`'s arguments; `epochs`:
    fewer than the preset's, for tests)."""
    import keras

    from digitlab import fastfit
    from digitlab.forward import PIXEL_SCALE
    from digitlab.model import build_model, compile_model

    spec = companion_spec()
    if epochs is not None:
        spec = spec.replace(train={"epochs": epochs})
    images = level_background(digits) if level else np.asarray(digits)
    keras.utils.set_random_seed(SEED)  # before building: it sets the initial weights
    model = build_model(spec, num_classes)
    compile_model(model, spec, num_classes, train_samples=len(images))
    fastfit.fit(
        model,
        images.reshape((-1, *spec.input_shape)),
        np.asarray(labels),
        batch_size=spec.train.batch_size,
        epochs=spec.train.epochs,
        verbose=0,
        seed=SEED,
        input_scale=PIXEL_SCALE,
    )
    return model


def dense_weights(model) -> dict[str, np.ndarray]:
    """The model's Dense kernels and biases, in order, as confidence.npz keeps them."""
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    weights = [np.asarray(w, np.float32) for layer in dense for w in layer.get_weights()]
    return {f"companion_{name}": w for name, w in zip(WEIGHTS, weights, strict=True)}


def companion_probabilities(weights: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """The companion's probabilities for uint8 N×H×W images (N×classes): its Dense layers in
    NumPy, relu between them and a softmax at the end."""
    x = prepare_inputs(images)  # flat, scaled by 1/255 as the network was trained
    for i in range(LAYERS):
        x = x @ weights[f"companion_kernel_{i}"] + weights[f"companion_bias_{i}"]
        x = ACTIVATIONS["relu" if i < LAYERS - 1 else "softmax"](x)
    return x


def cached_companion(
    digits: np.ndarray, labels: np.ndarray, num_classes: int, level: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """`train_companion`'s result, trained once per set of digits and kept in the cache
    (`$XDG_CACHE_HOME/digitlab/companions/`), keyed by the digits, labels, `level`, the
    companion's spec (`companion_spec`) and the Keras and JAX versions. A cached file that
    can't be read, or holds other shapes, is trained again and replaced."""
    settings = (VERSION, num_classes, level, SEED, companion_spec().model_dump_json())
    return cached_weights(
        "companions",
        weights_key(settings, digits, labels),
        "companion_",
        WEIGHTS,
        lambda weights: weights[f"companion_bias_{LAYERS - 1}"].shape == (num_classes,),
        lambda: train_companion(digits, labels, num_classes, level),
    )
