"""One run's model as functions of its input (`Probe`), and the layers it shows (`LayerInfo`).

`inspect` and `explain` both read a run through its probe: every shown layer's output, the
logits, and the gradient of a class logit with respect to the input. `NumpyProbe` computes
them in NumPy from the model file, in milliseconds, for the layers it has gradient rules
for; other networks get `Probe`, compiled JAX functions through Keras, whose import and
compilation take seconds. `Probe.of(run)` picks one, once per run object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from zipfile import BadZipFile

import numpy as np

from digitlab.errors import DigitlabError, RunError
from digitlab.forward import (
    ACTIVATIONS,
    IDENTITY_LAYERS,
    Unsupported,
    _step,
    padding_of,
    read_model_file,
    to_probabilities,
)
from digitlab.runs import Run

SHOWN_LAYERS = ("Dense", "Conv2D", "Activation")  # the layers whose outputs are pictured
METHODS = ("integrated", "gradient")
IG_STEPS = 32  # Riemann steps of integrated gradients; the attributions' sum is within ~1%


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "linear") if activation is not None else "linear"


@dataclass(frozen=True)
class LayerInfo:
    index: int  # in model.layers
    name: str
    type: str
    activation: str
    shape: tuple[int, ...]  # one digit's output shape

    @classmethod
    def of(cls, index: int, layer) -> LayerInfo:
        """The description of Keras layer `layer`, number `index` in its model."""
        shape = tuple(int(d) for d in layer.output.shape[1:])
        return cls(index, layer.name, type(layer).__name__, _activation_name(layer), shape)


def _keras_on_jax():
    """Keras, configured for JAX; refused in one line on another backend."""
    import keras

    from digitlab.fastfit import _configure_jax

    _configure_jax()
    if keras.backend.backend() != "jax":
        raise DigitlabError("inspect and explain need the JAX backend (KERAS_BACKEND=jax)")
    return keras


def _compile(graph, last):
    """The jitted functions of a probe: `forward` (the shown layers' outputs and the logits:
    `graph`'s last output is the input of the output layer `last`, whose activation is left
    out), `gradient` (d logit of the target class / d input) and `explain` (all at once,
    with the saliency: integrated gradients over `steps` steps, or the gradient if 0)."""
    import jax
    import jax.numpy as jnp

    trainable = [jnp.array(v.value, copy=True) for v in graph.trainable_variables]
    non_trainable = [jnp.array(v.value, copy=True) for v in graph.non_trainable_variables]
    kernel = jnp.array(last.kernel.value, copy=True)
    bias = jnp.array(last.bias.value, copy=True) if last.use_bias else 0.0

    def forward(x):
        values = graph.stateless_call(trainable, non_trainable, x, training=False)[0]
        logits = values[-1].reshape(values[-1].shape[0], -1) @ kernel + bias
        return values[:-1], logits

    def score(x, target):
        logits = forward(x)[1]
        return jnp.take_along_axis(logits, target[:, None], axis=1).sum()

    gradient = jax.grad(score)

    def integrated(x, target, steps):
        alphas = (jnp.arange(steps, dtype=jnp.float32) + 0.5) / steps
        scaled = alphas.reshape(-1, *([1] * x.ndim)) * x[None]
        grads = jax.vmap(lambda xs: gradient(xs, target))(scaled)
        return grads.mean(axis=0) * x

    def explain(x, target, steps):
        values, logits = forward(x)
        target = jnp.where(target < 0, jnp.argmax(logits, axis=1), target)
        saliency = integrated(x, target, steps) if steps else gradient(x, target)
        return values, logits, target, saliency

    return jax.jit(forward), jax.jit(gradient), jax.jit(explain, static_argnums=2)


class Probe:
    """One run's model as compiled JAX functions: every shown layer's output, the logits,
    and the gradients of a class logit with respect to the input."""

    def __init__(self, run: Run):
        keras = _keras_on_jax()
        self.run = run
        model = run.model
        self.input_shape = tuple(run.spec.input_shape)
        self.image_shape = tuple(run.image_shape)
        shown = [
            (i, layer)
            for i, layer in enumerate(model.layers)
            if type(layer).__name__ in SHOWN_LAYERS
        ]
        self.layers = [LayerInfo.of(i, layer) for i, layer in shown]
        last = model.layers[-1]
        outputs = [layer.output for _, layer in shown] + [last.input]
        self._graph = keras.Model(model.inputs, outputs)
        self.forward, self.gradient, self._explain = _compile(self._graph, last)
        self.output_activation = _activation_name(last)

    @classmethod
    def of(cls, run: Run) -> Probe:
        """The probe of `run`, built once per run object: a `NumpyProbe` where its rules
        cover the network, else the compiled one (compiling is the slow part)."""
        probe = run.__dict__.get("_insight_probe")
        if probe is None:
            probe = NumpyProbe.load(run) or cls(run)
            run.__dict__["_insight_probe"] = probe
        return probe

    def inputs(self, images: np.ndarray) -> np.ndarray:
        from digitlab.forward import prepare_inputs

        return prepare_inputs(self.run.network_images(images), self.input_shape)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Class probabilities from logits, as `Run.predict_proba` gives them."""
        import keras

        activation = self.output_activation
        outputs = np.asarray(logits, np.float64)
        if activation not in {"linear", "softmax"}:
            outputs = np.asarray(keras.activations.get(activation)(logits), np.float64)
        return to_probabilities(outputs, "linear" if activation == "softmax" else activation)

    def activations(self, images: np.ndarray, batch: int = 500):
        """Every shown layer's outputs (a list of N×… arrays) and the N×K probabilities."""
        values: list[list[np.ndarray]] = [[] for _ in self.layers]
        probs = []
        x = self.inputs(images)
        for start in range(0, len(x), batch):
            outs, logits = self.forward(x[start : start + batch])
            for store, out in zip(values, outs, strict=True):
                store.append(np.asarray(out))
            probs.append(self.probabilities(np.asarray(logits)))
        return [np.concatenate(v) for v in values], np.concatenate(probs)

    def saliency(
        self,
        images: np.ndarray,
        targets: np.ndarray | None = None,
        method: str = "integrated",
        steps: int = IG_STEPS,
    ) -> np.ndarray:
        """Attributions shaped like the images (N×28×28): for each digit, how the score of
        its target class (default: the predicted one) depends on each pixel.

        `method="gradient"`: d logit / d pixel. `"integrated"`: integrated gradients from a
        black image, `x · mean_α ∇logit(α·x)`; the attributions sum to about the logit's
        change from the black image, and are 0 where there is no ink.
        """
        if method not in METHODS:
            raise DigitlabError(f"saliency method must be one of {', '.join(METHODS)}")
        x = self.inputs(images)
        if targets is None:
            targets = np.full(len(x), -1)
        targets = np.asarray(targets, np.int32)
        out = []
        for start in range(0, len(x), 100):
            *_, s = self._explain(
                x[start : start + 100],
                targets[start : start + 100],
                steps if method == "integrated" else 0,
            )
            out.append(np.asarray(s))
        return np.concatenate(out).reshape(len(x), *self.image_shape)


# ------------------------------------------------------------------------------ in NumPy
# d activation / d pre-activation, times g, from the activation's output y: JAX's own rules
# (relu's is 0 at 0, as jax.nn.relu's custom derivative has it).
ACTIVATION_GRADIENTS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "linear": lambda g, y: g,
    "relu": lambda g, y: np.where(y > 0, g, np.float32(0)),
    "sigmoid": lambda g, y: g * y * (1 - y),
    "tanh": lambda g, y: g * (1 - y * y),
    "softmax": lambda g, y: y * (g - (g * y).sum(axis=-1, keepdims=True)),
}
GRADIENT_CHUNK = 256  # inputs per backward pass: bounds a convolution's saved outputs


def _activation_gradient(config: dict) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    name = config.get("activation") or "linear"
    if name not in ACTIVATION_GRADIENTS:
        raise Unsupported(f"the gradient of activation {name!r}")
    return ACTIVATION_GRADIENTS[name]


def _scatter_windows(g_windows, x_shape, size, strides, padding: str) -> np.ndarray:
    """The gradient of `forward._windows`: each offset's gradient (N×out_h×out_w×C) added
    back where that window read the (padded) input, the padding cut off."""
    pads = padding_of(x_shape, size, strides, padding)
    padded = [n + before + after for n, (before, after) in zip(x_shape, pads, strict=True)]
    g = np.zeros(padded, np.float32)
    (sh, sw) = (strides, strides) if isinstance(strides, int) else strides
    for (i, j), part in g_windows:
        out_h, out_w = part.shape[1:3]
        g[:, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw] += part
    (top, _), (left, _) = pads[1], pads[2]
    return g[:, top : top + x_shape[1], left : left + x_shape[2]]


def _backward(kind: str, config: dict, weights: list[np.ndarray]):
    """The vector-Jacobian product of one layer at inference: (g, its input x, its output
    y) -> the gradient with respect to x."""
    if kind in IDENTITY_LAYERS:
        return lambda g, x, y: g
    if kind in ("Flatten", "Reshape"):
        return lambda g, x, y: g.reshape(x.shape)
    if kind == "Rescaling":
        return lambda g, x, y: g * np.float32(config["scale"])
    if kind == "Activation":
        grad = _activation_gradient(config)
        return lambda g, x, y: grad(g, y)
    if kind == "Dense":
        grad = _activation_gradient(config)
        return lambda g, x, y: grad(g, y) @ weights[0].T
    if kind == "Conv2D":
        grad, kernel = _activation_gradient(config), weights[0]
        size, strides, padding = kernel.shape[:2], config["strides"], config["padding"]

        def conv(g, x, y):
            g = grad(g, y)
            parts = (((i, j), g @ kernel[i, j].T) for i in range(size[0]) for j in range(size[1]))
            return _scatter_windows(parts, x.shape, size, strides, padding)

        return conv
    if kind == "AveragePooling2D" and config.get("padding") == "valid":
        size = config["pool_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        strides = config.get("strides") or size
        share = np.float32(1 / np.prod(size))

        def pool(g, x, y):
            parts = (((i, j), g * share) for i in range(size[0]) for j in range(size[1]))
            return _scatter_windows(parts, x.shape, size, strides, "valid")

        return pool
    if kind == "GlobalAveragePooling2D":
        return lambda g, x, y: np.broadcast_to(
            g.reshape(len(g), 1, 1, -1) / np.float32(x.shape[1] * x.shape[2]), x.shape
        )
    if kind == "BatchNormalization" and config.get("axis", -1) in (-1, [-1]):
        names = ["gamma"] * bool(config.get("scale", True)) + ["beta"] * bool(
            config.get("center", True)
        )
        var = dict(zip([*names, "moving_mean", "moving_variance"], weights, strict=True))
        scale = 1 / np.sqrt(var["moving_variance"] + np.float32(config["epsilon"]))
        scale = scale * var["gamma"] if "gamma" in var else scale
        return lambda g, x, y: g * scale
    raise Unsupported(f"the gradient of layer {kind}")


class NumpyProbe(Probe):
    """`Probe` computed in NumPy from the model file: the shown layers' outputs and the
    logits (`forward`'s own steps), the gradient of a class logit by the chain rule, layer
    by layer back (`_backward`). Nothing to import or compile: `explain` takes milliseconds
    instead of Keras's and JAX's seconds (issue 23). For the networks whose every layer and
    activation has a rule here; `load` returns None for the others (max pooling, layer
    normalization, activations but linear, relu, sigmoid, tanh and softmax), which the
    compiled `Probe` explains. tests/test_instant.py holds both to each other."""

    def __init__(self, run: Run, layers: list[dict], weights: list[list[np.ndarray]]):
        self.run = run
        self.input_shape = tuple(run.spec.input_shape)
        self.image_shape = tuple(run.image_shape)
        *body, last = list(zip(layers, weights, strict=True))[1:]  # the input layer first
        if last[0]["class_name"] != "Dense":
            raise Unsupported("an output layer that is not Dense")
        self._steps = [
            (
                lay["class_name"],
                _step(lay["class_name"], lay["config"], w),
                _backward(lay["class_name"], lay["config"], w),
            )
            for lay, w in body
        ]
        self._kernel, *bias = last[1]
        self._bias = bias[0] if bias else np.float32(0)
        self.output_activation = last[0]["config"].get("activation") or "linear"
        _activation_gradient(last[0]["config"])  # an output activation known here
        self._output = ACTIVATIONS[self.output_activation]
        shown = [i for i, (lay, _) in enumerate(body) if lay["class_name"] in SHOWN_LAYERS]
        self._shown = shown
        values, _ = self.forward(np.zeros((1, *self.input_shape), np.float32))
        names = [lay["config"]["name"] for lay, _ in body] + [last[0]["config"]["name"]]
        kinds = [lay["class_name"] for lay, _ in body] + ["Dense"]
        activations = [lay["config"].get("activation") or "linear" for lay, _ in body]
        activations.append(self.output_activation)
        self.layers = [
            LayerInfo(i, names[i], kinds[i], activations[i], tuple(v.shape[1:]))
            for i, v in zip([*shown, len(body)], values, strict=True)
        ]

    @classmethod
    def load(cls, run: Run) -> NumpyProbe | None:
        """The NumPy probe of `run`, or None if a layer or activation has no rule here or
        the model file doesn't read as forward.py reads it."""
        from digitlab.files import MAX_MODEL_BYTES, check_regular
        from digitlab.runs import MODEL_FILE

        check_regular(run.path / MODEL_FILE, MAX_MODEL_BYTES, RunError)
        try:
            return cls(run, *read_model_file(run.path / MODEL_FILE))
        except (Unsupported, ValueError, KeyError, TypeError, IndexError, OSError, BadZipFile):
            return None

    def _pass(self, x: np.ndarray):
        """Every layer's input and output, and the logits."""
        trace = []
        for _, step, _ in self._steps:
            y = x if step is None else step(x)
            trace.append((x, y))
            x = y
        if x.ndim != 2:
            raise Unsupported("an output layer on more than one axis")
        return trace, x @ self._kernel + self._bias

    def forward(self, x: np.ndarray):
        """The shown layers' outputs (the output layer's last) and the logits."""
        x = np.asarray(x, np.float32)
        trace, logits = self._pass(x)
        values = [trace[i][1] for i in self._shown] + [self._output(logits)]
        return values, logits

    def gradient(self, x: np.ndarray, target: np.ndarray) -> np.ndarray:
        """d logit[target] / d input, each digit's for its own target."""
        x, target = np.asarray(x, np.float32), np.asarray(target)
        parts = []
        for start in range(0, len(x), GRADIENT_CHUNK):
            trace, logits = self._pass(x[start : start + GRADIENT_CHUNK])
            g = np.zeros_like(logits)
            g[np.arange(len(g)), target[start : start + GRADIENT_CHUNK]] = 1
            g = g @ self._kernel.T
            for (_, _, backward), (layer_input, layer_output) in zip(
                reversed(self._steps), reversed(trace), strict=True
            ):
                g = backward(g, layer_input, layer_output)
            parts.append(g)
        return np.concatenate(parts) if parts else np.zeros_like(x)

    def _explain(self, x: np.ndarray, target: np.ndarray, steps: int):
        """As the compiled `_explain`: values, logits, the target (the predicted class where
        it is -1) and the saliency (integrated gradients over `steps`, or the gradient)."""
        x = np.asarray(x, np.float32)
        values, logits = self.forward(x)
        target = np.where(np.asarray(target) < 0, logits.argmax(axis=1), target).astype(np.int32)
        if not steps:
            return values, logits, target, self.gradient(x, target)
        alphas = (np.arange(steps, dtype=np.float32) + np.float32(0.5)) / np.float32(steps)
        scaled = alphas.reshape(-1, *([1] * x.ndim)) * x[None]
        grads = self.gradient(scaled.reshape(-1, *x.shape[1:]), np.tile(target, steps))
        return values, logits, target, grads.reshape(steps, *x.shape).mean(axis=0) * x

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Class probabilities from logits, as `Run.predict_proba` gives them."""
        outputs = np.asarray(logits, np.float64)
        activation = self.output_activation
        if activation not in {"linear", "softmax"}:
            outputs = np.asarray(self._output(np.asarray(logits, np.float32)), np.float64)
        return to_probabilities(outputs, "linear" if activation == "softmax" else activation)
