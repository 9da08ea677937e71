"""One run's model as compiled JAX functions (`Probe`), and the layers it shows (`LayerInfo`).

`inspect` and `explain` both read a run through its probe; compiling is the slow part, so
`Probe.of(run)` builds it once per run object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from digitlab.errors import DigitlabError
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
        """The probe of `run`, built once per run object (compiling is the slow part)."""
        probe = run.__dict__.get("_insight_probe")
        if probe is None:
            probe = run.__dict__["_insight_probe"] = cls(run)
        return probe

    def inputs(self, images: np.ndarray) -> np.ndarray:
        from digitlab.model import prepare_inputs

        return prepare_inputs(images, self.input_shape)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Class probabilities from logits, as `Run.predict_proba` gives them."""
        import keras

        from digitlab.model import to_probabilities

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
