"""Saturated sigmoid units: predicted from the pre-activation scale, then measured.

A sigmoid's output is within `margin` of 0 or 1 exactly when its pre-activation `z` is beyond

    z_sat = logit(1 − margin)            (ln 99 ≈ 4.6 for margin 0.01)

(the margin `digitlab inspect` and the experiments' activation statistics count as
saturated), and there its slope `σ'(z) < margin` passes almost no gradient back (LeCun et al.
1998, §4.4; Glorot & Bengio 2010, §3).

**The prediction** is a Gaussian approximation. At initialisation a layer's weights are
independent with mean 0 and variance `σ_w²` (Keras's Glorot-uniform default:
`2 / (fan_in + fan_out)`), so for an input `a` a unit's `z = Σ_i w_i a_i + b` is a sum of
`fan_in` independent terms, about `N(b, σ_w² |a|²)`. The predicted saturated share is

    P(|z| > z_sat) = mean over inputs a and units of  Φ((−z_sat − b) / s) + Φ((b − z_sat) / s),
                     s = σ_w |a|

so it needs only the inputs' norms and the weights' scale, not the layer's outputs: raw pixels
(|a| 255 times larger) saturate the first sigmoid layer, standardised ones barely. `σ_w²` is
read from the layer's own kernel (its mean square), so the prediction is for this draw.

**The measurement** runs the network (inference mode) to each sigmoid Dense layer and counts
the pre-activations beyond `z_sat`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import keras
import numpy as np
from scipy.special import logit
from scipy.stats import norm

SATURATION_MARGIN = 0.01  # as digitlab.insight.inspection and experiments' activation stats


@dataclass(frozen=True)
class Saturation:
    """One sigmoid layer's saturated share, predicted and measured.

    Attributes:
        layer: the layer's name.
        weight_std: `σ_w`, the root mean square of its kernel.
        scale: the predicted pre-activation scale `σ_w |a|`, root mean square over inputs.
        measured_scale: the measured pre-activations' root mean square.
        predicted: the predicted share of pre-activations beyond `±z_sat`.
        measured: the measured share.
    """

    layer: str
    weight_std: float
    scale: float
    measured_scale: float
    predicted: float
    measured: float

    def to_dict(self) -> dict[str, float | str]:
        """The fields, for a JSON record."""
        return dataclasses.asdict(self)


def saturation_threshold(margin: float = SATURATION_MARGIN) -> float:
    """`z_sat = logit(1 − margin)`: beyond `±z_sat` a sigmoid is within `margin` of 0 or 1."""
    if not 0 < margin < 0.5:
        raise ValueError(f"margin must be in (0, 0.5), got {margin}")
    return float(logit(1 - margin))


def predicted_saturated_share(
    scales: np.ndarray, threshold: float, offsets: np.ndarray | float = 0.0
) -> float:
    """`P(|z| > threshold)` for `z ~ N(offset, scale²)`, averaged over every (scale, offset).

    Args:
        scales: pre-activation scales, one per input (`σ_w |a|`), all positive.
        threshold: `z_sat`.
        offsets: the units' biases (default 0, as at initialisation); broadcast against
            `scales` as inputs × units.
    """
    # An all-zero input has scale 0: its z is the bias alone, saturated only past ±threshold.
    scales = np.maximum(np.asarray(scales, np.float64), np.finfo(np.float64).tiny).reshape(-1, 1)
    offsets = np.asarray(offsets, np.float64).reshape(1, -1)
    above = norm.sf((threshold - offsets) / scales)
    below = norm.cdf((-threshold - offsets) / scales)
    return float(np.mean(above + below))


def sigmoid_saturation(
    model: keras.Sequential, x: np.ndarray, margin: float = SATURATION_MARGIN
) -> list[Saturation]:
    """Each sigmoid Dense layer's saturated share on `x`: predicted and measured.

    Args:
        model: a built `keras.Sequential` (e.g. from `build_model`), usually at initialisation.
        x: the digits, as the model takes them.
        margin: an output within this of 0 or 1 is saturated (default 0.01).

    Returns:
        One `Saturation` per sigmoid Dense layer, in order (empty when there is none).
    """
    threshold = saturation_threshold(margin)
    found = []
    inputs = np.asarray(x, np.float32)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense) and layer.activation is keras.activations.sigmoid:
            found.append(_layer_saturation(layer, inputs, threshold))
        inputs = keras.ops.convert_to_numpy(layer(inputs, training=False))
    return found


def _layer_saturation(layer: keras.layers.Dense, inputs: np.ndarray, threshold: float):
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
    bias = keras.ops.convert_to_numpy(layer.bias) if layer.use_bias else np.zeros(1)
    flat = inputs.reshape(len(inputs), -1).astype(np.float64)
    z = flat @ kernel + bias
    weight_std = float(np.sqrt(np.mean(kernel**2)))
    scales = weight_std * np.linalg.norm(flat, axis=1)
    return Saturation(
        layer=layer.name,
        weight_std=weight_std,
        scale=float(np.sqrt(np.mean(scales**2))),
        measured_scale=float(np.sqrt(np.mean(z**2))),
        predicted=predicted_saturated_share(scales, threshold, bias),
        measured=float(np.mean(np.abs(z) > threshold)),
    )
