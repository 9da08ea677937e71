"""Keras callbacks an experiment adds to each fit: progress, activation statistics, the
training loss and accuracy measured with dropout off after every epoch."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

SATURATION = 0.01  # a sigmoid/tanh output within this of either bound counts as saturated
BOUNDS = {"sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0)}
STATISTICS = ("p15", "p50", "p85", "saturated", "dead")
TRAINING_DIGITS = 2_000  # the training digits the inference-mode loss is measured on


class EpochProgress(keras.callbacks.Callback):
    """Calls `advance()` after every epoch (the experiment's progress bar counts epochs)."""

    def __init__(self, advance: Callable[[], None]):
        super().__init__()
        self._advance = advance

    def on_epoch_end(self, epoch, logs=None):
        self._advance()


class TrainingLoss(keras.callbacks.Callback):
    """The loss and accuracy on training digits in inference mode (dropout off), every epoch.

    Keras's own training loss is measured with dropout on, while the weights change within
    the epoch; this one is measured like the validation loss, after the epoch, so the gap
    between the two compares like with like for networks with and without dropout. The
    figures are added to the epoch's logs as `inference_loss` and `inference_accuracy`, so a
    run's history.csv and the experiment's curves carry them (the callback must come before
    the callback that records the logs). `x`, `y` are the first `TRAINING_DIGITS` digits fit
    trains on: the same digits after every epoch, a sample large enough for a loss to about
    ±0.01 and cheap enough (~10 ms for the notebook's net) to take every epoch.
    """

    adds_to_logs = True  # training runs it before the callback that keeps the logs

    def __init__(self, x: np.ndarray, y: np.ndarray):
        super().__init__()
        self.x, self.y = x[:TRAINING_DIGITS], y[:TRAINING_DIGITS]
        self.loss: float | None = None  # the last epoch's
        self.accuracy: float | None = None

    def on_epoch_end(self, epoch, logs=None):
        result = self.model.evaluate(self.x, self.y, batch_size=1000, verbose=0, return_dict=True)
        self.loss = float(result["loss"])
        if "accuracy" in result:
            self.accuracy = float(result["accuracy"])
        else:  # a spec compiled without the accuracy metric
            predicted = np.argmax(self.model.predict(self.x, batch_size=1000, verbose=0), axis=-1)
            labels = np.argmax(self.y, axis=-1) if self.y.ndim > 1 else self.y
            self.accuracy = float(np.mean(predicted == labels))
        if logs is not None:
            logs["inference_loss"], logs["inference_accuracy"] = self.loss, self.accuracy


def _activation_name(layer: keras.layers.Layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", "linear") if activation is not None else "linear"


def layer_statistics(model: keras.Model, x: np.ndarray) -> dict[str, dict[str, float]]:
    """For each hidden nonlinearity (all but the output layer), on the batch `x`:

    - `p15`, `p50`, `p85`: percentiles of its pre-activations (the input to the nonlinearity,
      after batch normalisation where there is one), over all units and digits;
    - `saturated`: the fraction of sigmoid/tanh outputs within 0.01 of a bound;
    - `dead`: the fraction of relu units that are zero on every digit of the batch.

    Layers are named "1 sigmoid", "2 relu", ... in order.
    """
    stats: dict[str, dict[str, float]] = {}
    h = keras.ops.convert_to_tensor(x)
    layers = model.layers[:-1]  # the output layer is not hidden
    for layer in layers:
        name = _activation_name(layer)
        if isinstance(layer, keras.layers.Dense) and name != "linear":
            pre = keras.ops.matmul(h, layer.kernel)
            if layer.use_bias:
                pre = pre + layer.bias
            h = layer.activation(pre)
        elif isinstance(layer, keras.layers.Activation) and name != "linear":
            pre = h
            h = layer(h)
        else:
            h = layer(h, training=False)
            continue
        pre_np, out = np.asarray(pre), np.asarray(h)
        p15, p50, p85 = np.percentile(pre_np, [15, 50, 85])
        entry = {"p15": float(p15), "p50": float(p50), "p85": float(p85)}
        if name in BOUNDS:
            low, high = BOUNDS[name]
            near = (out <= low + SATURATION) | (out >= high - SATURATION)
            entry["saturated"] = float(near.mean())
        if name == "relu":
            entry["dead"] = float((out <= 0).all(axis=0).mean())
        stats[f"{len(stats) + 1} {name}"] = entry
    return stats


class ActivationStatistics(keras.callbacks.Callback):
    """`layer_statistics` on a fixed batch before training and after every epoch.

    `values[layer][statistic]` is a list with one value per point (index 0 before the first
    epoch); a resumed run continues the lists it is given.
    """

    def __init__(self, x: np.ndarray, values: dict[str, dict[str, list[float]]] | None = None):
        super().__init__()
        self.x = x
        self.values: dict[str, dict[str, list[float]]] = {
            layer: {k: list(v) for k, v in stats.items()} for layer, stats in (values or {}).items()
        }

    def _record(self) -> None:
        for layer, stats in layer_statistics(self.model, self.x).items():
            for key, value in stats.items():
                self.values.setdefault(layer, {}).setdefault(key, []).append(value)

    def on_train_begin(self, logs=None):
        if not self.values:
            self._record()

    def on_epoch_end(self, epoch, logs=None):
        self._record()


class SharpnessAtLoss(keras.callbacks.Callback):
    """λ_max of the training loss's Hessian where the training loss (dropout off) first falls
    to `matched_loss`: Keskar et al. 2017 compare small- and large-batch minima's sharpness
    at equal training loss. Logged every epoch as `sharpness` (NaN but at that epoch, so
    history.csv keeps it beside the loss), on `training`'s digits, whose loss it reads: it
    must come after that callback. A resumed run that measured it already (`measured`)
    does not measure again."""

    adds_to_logs = True

    def __init__(self, training: TrainingLoss, matched_loss: float, measured: bool = False):
        super().__init__()
        self.training, self.matched_loss, self.measured = training, matched_loss, measured

    def on_epoch_end(self, epoch, logs=None):
        from digitlab.mechanisms import top_hessian_eigenvalue

        value = float("nan")
        loss = self.training.loss
        if not self.measured and loss is not None and loss <= self.matched_loss:
            value = top_hessian_eigenvalue(self.model, self.training.x, self.training.y).value
            self.measured = True
        if logs is not None:
            logs["sharpness"] = value


def measuring(
    x: np.ndarray, y: np.ndarray, matched_loss: float | None = None, history: dict | None = None
) -> list[keras.callbacks.Callback]:
    """The callbacks that measure every experiment run after each epoch: the training loss
    with dropout off (`TrainingLoss`) and, given a `matched_loss`, the sharpness there
    (`SharpnessAtLoss`; `history` a resumed run's, which may hold it already)."""
    training = TrainingLoss(x, y)
    if matched_loss is None:
        return [training]
    done = any(np.isfinite(v) for v in (history or {}).get("sharpness", []))
    return [training, SharpnessAtLoss(training, matched_loss, measured=done)]
