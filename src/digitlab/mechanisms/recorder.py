"""A training callback that records the mechanisms while a network trains (issue 21, §4).

Before the first epoch and after every epoch, on a fixed sample of the training digits (the
first `SAMPLE_SIZE`, in inference mode: dropout off), `MechanismRecorder` keeps:

- **activations**: per hidden layer with a nonlinearity, a histogram of its outputs over
  fixed bins (fast.ai's "colourful dimension": the histograms side by side over epochs),
  with the **saturated** share of a bounded one (sigmoid, tanh: outputs within
  `SATURATION_MARGIN` of a bound, as `digitlab inspect` counts them) and the **dead** share
  of a relu (units zero on every digit of the sample). A bounded activation's bins span its
  range; an unbounded one's span `[min(0, lowest), 4 × its 99th percentile]` before training,
  and the share above the top bin is kept (`above`);
- **gradient norms**: per layer with weights, `|∇L|` of the mean loss over the sample;
- **update/weight ratios**: per layer, `|Δw| / |w|` of the step the optimizer would take
  next (its own state: Adam's moments, the schedule's rate) on a batch of the run's
  `batch_size` digits of the sample (CS231n's rule of thumb: about 1e-3);
- **the gradient noise scale** `B_simple` (per-example gradients of the first `NOISE_SIZE`
  digits, ± a jackknife SE over `NOISE_CHUNK`-digit groups; `mechanisms.gradient_noise`'s
  estimator) before training and at `NOISE_POINTS` epochs spread geometrically to the last.

Two programs are compiled once per fit (the weights are their arguments), so a point costs
one forward pass of the sample, two gradients and an optimizer step, and a noise point
`NOISE_SIZE` per-example gradients: benchmarks/bench_mechanisms.py measures the overhead
(target ≤ 5% of an epoch). `values` is JSON-ready; training writes it as the run's
`mechanisms.json` (`runs.folder.write_mechanisms`), and a resumed run continues it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import keras
import numpy as np
from jax.flatten_util import ravel_pytree

SAMPLE_SIZE = 256  # training digits the activations, gradients and updates are measured on
NOISE_BATCH = 32  # B_small of the noise scale's two batch sizes
NOISE_BATCHES = 32  # disjoint batches: B_big = 1,024 digits, all of them
NOISE_POINTS = 4  # epochs with a noise scale, besides the start
BINS = 40  # as fast.ai's ActivationStats histograms
SATURATION_MARGIN = 0.01  # as digitlab.insight.inspection and the experiments' statistics
BOUNDED = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "hard_sigmoid": (0.0, 1.0)}
RELU_LIKE = ("relu", "relu6")


def noise_epochs(epochs: int) -> list[int]:
    """The epochs after which the noise scale is measured: 0 (the start), then
    `NOISE_POINTS` spread geometrically from 1 to `epochs` (fewer when they coincide)."""
    later = np.unique(np.round(np.geomspace(1, max(epochs, 1), NOISE_POINTS)).astype(int))
    return [0, *(int(e) for e in later)]


def activation_name(layer: keras.layers.Layer) -> str:
    """The name of a layer's activation function ("linear" for none)."""
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "linear") if activation is not None else "linear"


class MechanismRecorder(keras.callbacks.Callback):
    """Records activations, gradient norms, update ratios and the noise scale as a model
    trains (the module's docstring says what and how).

    Args:
        x, y: the training inputs as the fit gets them and their loss targets; the first
            rows make the fixed samples.
        batch_size: the fit's batch: the update ratio is of a step on this many digits.
        input_scale: the factor the fit applies to `x` (fastfit's `input_scale`), if any.
        previous: the `values` of an earlier fit of the same run, to continue (a resume).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int,
        *,
        input_scale: float | None = None,
        previous: dict[str, Any] | None = None,
    ):
        super().__init__()
        scale = np.float32(1.0 if input_scale is None else input_scale)
        self.x = np.asarray(x[: max(SAMPLE_SIZE, NOISE_BATCH * NOISE_BATCHES)], np.float32) * scale
        self.y = np.asarray(y[: len(self.x)])
        self.batch_size = int(min(batch_size, SAMPLE_SIZE, len(self.x)))
        self.values: dict[str, Any] = previous or {}
        self._programs: _Programs | None = None

    @classmethod
    def for_run(
        cls, x, y, spec, enabled: bool = True, previous: Path | None = None
    ) -> tuple[MechanismRecorder, ...]:
        """The recorder of a run's fit as a tuple of callbacks: `(recorder,)`, or `()` when
        not `enabled`. A resumed run (`previous`: its folder) is recorded when it was before,
        its record continued. `x` is the fit's uint8 pixels, scaled as the fit scales them."""
        from digitlab.model import PIXEL_SCALE
        from digitlab.runs.folder import read_mechanisms

        before = read_mechanisms(previous) if previous is not None else None
        if not (enabled if previous is None else before is not None):
            return ()
        return (cls(x, y, spec.train.batch_size, input_scale=PIXEL_SCALE, previous=before),)

    def on_train_begin(self, logs=None):
        self._programs = _Programs(self.model, self.batch_size)
        self._programs.edges = self._edges(self._programs, self.x[:SAMPLE_SIZE])
        if not self.values.get("epochs"):
            self._record(0)

    def on_epoch_end(self, epoch, logs=None):
        self._record(epoch + 1)

    def _edges(self, programs: _Programs, sample: np.ndarray) -> dict[str, list[float]]:
        """Each recorded layer's bin edges: kept from `previous`, else from its kind and,
        for an unbounded activation, its outputs on `sample` before this fit."""
        kept = {name: layer["edges"] for name, layer in self.values.get("activations", {}).items()}
        if len(kept) and all(kept.values()):
            return kept
        if programs.probe is None:
            return {}
        found = programs.probe(sample, training=False)[: len(programs.layers)]
        edges = {}
        for layer, outputs in zip(programs.layers, found, strict=True):
            outputs = np.asarray(keras.ops.convert_to_numpy(outputs))
            kind = activation_name(layer)
            if kind in BOUNDED:
                low, high = BOUNDED[kind]
            else:
                low = min(0.0, float(outputs.min()))
                high = max(4 * float(np.percentile(outputs, 99)), low + 1e-3)
            edges[layer.name] = np.linspace(low, high, BINS + 1).tolist()
        return edges

    def _record(self, epoch: int) -> None:
        started = time.perf_counter()
        programs = self._programs
        state = [[v.value for v in group] for group in programs.groups]
        found = programs.summary(*state, self.x[:SAMPLE_SIZE], self.y[:SAMPLE_SIZE])
        values = self.values
        values.setdefault("epochs", []).append(epoch)
        values.update(sample=min(SAMPLE_SIZE, len(self.x)), batch_size=self.batch_size)
        values["layers"] = programs.layer_kinds  # each layer with weights: its activation
        for name, kind in programs.kinds.items():
            layer = values.setdefault("activations", {}).setdefault(
                name, {"activation": kind, "edges": programs.edges[name]}
            )
            for key in ("counts", "saturated", "dead", "above"):
                value = np.asarray(found["activations"][name][key]).tolist()
                if isinstance(value, float) and not np.isfinite(value):
                    value = None  # a share that doesn't apply to this activation
                layer.setdefault(key, []).append(value)
        for key in ("gradient_norms", "update_ratios", "weight_norms"):
            for name, value in zip(programs.weighted, np.asarray(found[key]), strict=True):
                values.setdefault(key, {}).setdefault(name, []).append(float(value))
        epochs = self.params.get("epochs") if self.params else None
        if epoch in noise_epochs(epochs or epoch):
            self._noise(epoch, state)
        values["seconds"] = values.get("seconds", 0.0) + time.perf_counter() - started

    def _noise(self, epoch: int, state) -> None:
        """B_simple from `NOISE_BATCHES` batch gradients of `NOISE_BATCH` digits (the paper's
        two batch sizes: one batch, and all of them), ± the jackknife over batches."""
        count = min(NOISE_BATCHES, len(self.x) // NOISE_BATCH)
        if count < 2:
            return
        shape = (count, NOISE_BATCH)
        x = self.x[: count * NOISE_BATCH].reshape(*shape, *self.x.shape[1:])
        y = self.y[: count * NOISE_BATCH].reshape(*shape, *self.y.shape[1:])
        squares, total_sq, dots = self._programs.noise(state[0], state[1], state[2], x, y)
        simple, error = batch_noise_scale(squares, float(total_sq), dots, NOISE_BATCH)
        noise = self.values.setdefault("noise_scale", {"epochs": [], "simple": [], "error": []})
        noise["epochs"].append(epoch)
        noise["simple"].append(float(simple) if np.isfinite(simple) else None)
        noise["error"].append(float(error) if np.isfinite(error) else None)
        noise["digits"] = count * NOISE_BATCH


def batch_noise_scale(
    squares: np.ndarray, total_sq: float, dots: np.ndarray, batch: int
) -> tuple[float, float]:
    """`B_simple` from `K` disjoint batches of `batch` digits, and its delete-a-batch
    jackknife standard error: McCandlish et al.'s Appendix A with `B_small = batch` and
    `B_big = K batch` (all of them; `gradient_noise.two_batch_estimate`'s eqs. A.2–A.3).

    Args:
        squares: each batch's `|g_k|²` (its mean-loss gradient's squared norm), K values.
        total_sq: `|S|²`, `S = Σ_k g_k`.
        dots: each `S · g_k`, K values: with them a left-out batch's sums need no gradients.

    Returns:
        `(B_simple, SE)`; `B_simple` is `inf` (and the SE `nan`) when `|G|²` is not positive,
        the SE `inf` when a left-out estimate is.
    """
    count = len(squares)

    def estimate(n: int, square_sum, mean_sq) -> np.ndarray:
        small, big, big_batch = square_sum / n, mean_sq / n**2, batch * n
        trace = (small - big) / (1 / batch - 1 / big_batch)
        norm_sq = (big_batch * big - batch * small) / (big_batch - batch)
        return np.where(norm_sq > 0, trace / np.where(norm_sq > 0, norm_sq, 1), np.inf)

    squares, dots = np.asarray(squares, np.float64), np.asarray(dots, np.float64)
    simple = float(estimate(count, squares.sum(), total_sq))
    if not np.isfinite(simple):
        return simple, float("nan")
    left = estimate(count - 1, squares.sum() - squares, total_sq - 2 * dots + squares)
    if not np.isfinite(left).all():
        return simple, float("inf")
    return simple, float(np.sqrt((count - 1) * np.var(left)))


def recorded_layers(model: keras.Model) -> tuple[list, keras.Model | None]:
    """The hidden layers with a nonlinearity (all but the output layer) and a model whose
    outputs are theirs (None for none, or a subclassed model without a layer graph)."""
    layers = [layer for layer in model.layers[:-1] if activation_name(layer) != "linear"]
    if not layers:
        return [], None
    try:  # the output layer's too, so that the probe holds every weight of the model
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        outputs = [layer.output for layer in [*layers, model.layers[-1]]]
        return layers, keras.Model(inputs, outputs)
    except (AttributeError, ValueError, TypeError):
        return [], None


class _Programs:
    """The recorder's two compiled programs, with the weights as arguments: `summary`
    (activations, gradient norms, the next step's update) and `noise` (the sums of batch
    gradients that `batch_noise_scale` needs)."""

    def __init__(self, model: keras.Model, batch_size: int):
        self.model, self.batch_size = model, batch_size
        self.edges: dict[str, list[float]] = {}  # each recorded layer's bins, set before a call
        self.layers, self.probe = recorded_layers(model)
        self.kinds = {layer.name: activation_name(layer) for layer in self.layers}
        paths = [v.path for v in model.trainable_variables]
        self.weighted = [layer.name for layer in model.layers if layer.trainable_weights]
        self.layer_kinds = {
            layer.name: activation_name(layer) for layer in model.layers if layer.trainable_weights
        }
        self.members = [
            [paths.index(w.path) for w in layer.trainable_weights]
            for layer in model.layers
            if layer.trainable_weights
        ]
        self.groups = (
            model.trainable_variables,
            model.non_trainable_variables,
            model.metrics_variables,
            model.optimizer.variables,
        )
        self.summary = jax.jit(self._summary)
        self.noise = jax.jit(self._noise)

    def _loss(self, trainable, non_trainable, metrics, x, y):
        loss, _ = self.model.compute_loss_and_updates(
            trainable, non_trainable, metrics, x, y, None, training=False
        )
        return loss

    def _norms(self, tensors) -> jnp.ndarray:
        """Per layer with weights, the L2 norm of its tensors together."""
        squares = [jnp.sum(jnp.square(t)) for t in tensors]
        return jnp.sqrt(jnp.stack([sum(squares[i] for i in m) for m in self.members]))

    def _summary(self, trainable, non_trainable, metrics, optimizer, x, y):
        found: dict[str, Any] = {"activations": {}}
        if self.probe is not None:
            outputs = self.probe.stateless_call(trainable, non_trainable, x, training=False)[0]
            for (name, kind), out in zip(self.kinds.items(), outputs, strict=False):
                found["activations"][name] = _layer_summary(out, kind, self.edges[name])
        gradient = jax.grad(self._loss)(trainable, non_trainable, metrics, x, y)
        b = self.batch_size
        step = jax.grad(self._loss)(trainable, non_trainable, metrics, x[:b], y[:b])
        updated, _ = self.model.optimizer.stateless_apply(optimizer, step, trainable)
        weights = self._norms(trainable)
        changes = self._norms([new - old for new, old in zip(updated, trainable, strict=True)])
        found["gradient_norms"] = self._norms(gradient)
        found["weight_norms"] = weights
        found["update_ratios"] = changes / jnp.maximum(weights, 1e-12)
        return found

    def _noise(self, trainable, non_trainable, metrics, x, y):
        """Of each batch's mean-loss gradient `g_k`: `|g_k|²`, `|Σ g_k|²` and `Σ g_j · g_k`."""

        def batch_gradient(xb, yb):
            gradient = jax.grad(self._loss)(trainable, non_trainable, metrics, xb, yb)
            return ravel_pytree(gradient)[0]

        gradients = jax.vmap(batch_gradient)(x, y)  # batches × weights: summed here, on
        total = gradients.sum(axis=0)  # the device, so only 2K + 1 numbers leave it
        return jnp.sum(gradients * gradients, axis=1), total @ total, gradients @ total


def _layer_summary(out, kind: str, edges: list[float]) -> dict[str, Any]:
    """A layer's outputs (digits × units…): the histogram over `edges` (values beyond them in
    the end bins, the share above the top edge apart), saturated and dead shares (NaN where
    they don't apply)."""
    values = jnp.reshape(out, (-1,)).astype(jnp.float32)
    edges = jnp.asarray(edges, jnp.float32)
    index = jnp.clip(jnp.searchsorted(edges, values, side="right") - 1, 0, BINS - 1)
    counts = jnp.zeros(BINS, jnp.int32).at[index].add(1)
    above = jnp.mean(values > edges[-1])
    saturated = dead = jnp.nan
    if kind in BOUNDED:
        low, high = BOUNDED[kind]
        near = (values <= low + SATURATION_MARGIN) | (values >= high - SATURATION_MARGIN)
        saturated = jnp.mean(near)
    if kind in RELU_LIKE:
        units = jnp.reshape(out, (out.shape[0], -1))
        dead = jnp.mean(jnp.all(units <= 0, axis=0))
    return {"counts": counts, "saturated": saturated, "dead": dead, "above": above}
