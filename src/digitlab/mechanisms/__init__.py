"""Mechanisms (issue 21): why the notebook's notes hold, measured on the learner's network.

Each measurement takes a model at fixed weights and the digits (the caller trains between
measurements), runs in seconds, and feeds a prediction the experiments then test:

- `noise_scale`, `noise_scale_two_batches` (`gradient_noise.py`): the gradient noise scale
  `B_simple = tr Σ / |G|²` (McCandlish et al. 2018), per-example or from two batch sizes;
- `top_hessian_eigenvalue` (`hessian.py`): `λ_max` of the loss's Hessian by power iteration
  on Hessian-vector products;
- `input_conditioning`, `scale_inputs` (`conditioning.py`): the eigenvalue spread of the
  inputs' covariance under each scaling (LeCun et al. 1998);
- `sigmoid_saturation` (`saturation.py`): sigmoid layers' saturated share, predicted from the
  pre-activation scale and measured;
- `fit_tradeoff`, `anchor_tradeoff`, `max_stable_learning_rate` (`predictions.py`): the
  steps–examples curve and critical batch, and the largest stable SGD rate `2 / λ_max`.

The losses are the compiled model's, with dropout off (`loss.py`). The names below load on
first use, so the NumPy-only parts (conditioning, predictions) don't import JAX.
"""

import importlib

_EXPORTS = {
    "Conditioning": "digitlab.mechanisms.conditioning",
    "SCALINGS": "digitlab.mechanisms.conditioning",
    "input_conditioning": "digitlab.mechanisms.conditioning",
    "scale_inputs": "digitlab.mechanisms.conditioning",
    "TopEigenvalue": "digitlab.mechanisms.hessian",
    "top_hessian_eigenvalue": "digitlab.mechanisms.hessian",
    "NoiseScale": "digitlab.mechanisms.gradient_noise",
    "noise_scale": "digitlab.mechanisms.gradient_noise",
    "noise_scale_two_batches": "digitlab.mechanisms.gradient_noise",
    "Tradeoff": "digitlab.mechanisms.predictions",
    "anchor_tradeoff": "digitlab.mechanisms.predictions",
    "fit_tradeoff": "digitlab.mechanisms.predictions",
    "max_stable_learning_rate": "digitlab.mechanisms.predictions",
    "Saturation": "digitlab.mechanisms.saturation",
    "sigmoid_saturation": "digitlab.mechanisms.saturation",
}

__all__ = [*_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'digitlab.mechanisms' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
