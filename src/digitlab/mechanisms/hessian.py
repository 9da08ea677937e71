"""The top eigenvalue of the loss's Hessian: how sharp the minimum is, how large a rate fits.

The Hessian `H = ∇²L(w)` of the training loss over all trainable weights is never formed (the
seed network's 99,710 weights would make it 40 GB). Power iteration needs only products
`H v`, which JAX computes at the cost of about two gradients, forward-over-reverse:

    H v = d/dε ∇L(w + ε v) |_{ε=0}   =  jax.jvp(jax.grad(L), (w,), (v,))[1]

(Pearlmutter 1994; the JAX autodiff cookbook's "Hessian-vector products"). Power iteration
(`v ← H v / |H v|`) converges to the eigenvalue of largest magnitude at the rate
`|λ₂ / λ₁|` per step; its Rayleigh quotient `vᵀ H v` is the estimate (Ghorbani et al. 2019
use Lanczos for the whole spectrum; the top eigenvalue needs only this). When that eigenvalue
is negative, a second run on `H − λ I` finds the top (most positive) one.

Uses: the largest stable rate of plain SGD, about `2 / λ_max`
(`predictions.max_stable_learning_rate`; LeCun et al. 1998, §5.1), and the sharpness of
small- and large-batch minima (Keskar et al. 2017). The loss is `training_loss`'s: the
compiled loss with **dropout off**, over the digits given as one batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import jax
import keras
import numpy as np
from jax.flatten_util import ravel_pytree

from digitlab.mechanisms.loss import training_loss

ITERATIONS = 100  # Hessian-vector products per power iteration at most
# Stop when |H v − λ v| / |λ| is below this: the Rayleigh quotient's error is then of the order
# of its square (1e-4). The seed network needs 15–40 products (benchmarks/RESULTS.md).
TOLERANCE = 1e-2


@dataclass(frozen=True)
class TopEigenvalue:
    """The Hessian's top eigenvalue, by power iteration.

    Attributes:
        value: `λ_max`, the Rayleigh quotient `vᵀ H v` of the last unit vector `v`.
        iterations: Hessian-vector products used (both runs, when a second was needed).
        converged: the residual reached the tolerance.
        residual: `|H v − λ v| / |λ|`, how far `v` is from an eigenvector (0 for an exact one).
    """

    value: float
    iterations: int
    converged: bool
    residual: float

    def to_dict(self) -> dict[str, float | int | bool]:
        """The fields, for a JSON record."""
        return dataclasses.asdict(self)


def hessian_vector_product(
    model: keras.Model, x: np.ndarray, y: np.ndarray
) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]:
    """`H v` for the training loss over `x`, `y` (dropout off), at the model's weights.

    Returns:
        A compiled `hvp(v)` on flat vectors (float32, one entry per trainable weight), and
        the flat weights `w` it is taken at.
    """
    loss = training_loss(model)
    weights, unravel = ravel_pytree(loss.weights)
    x, y = jax.device_put(x), jax.device_put(y)  # arguments, not constants baked into XLA

    def gradient(flat, x, y):
        return jax.grad(lambda w: loss.function(unravel(w), x, y))(flat)

    @jax.jit
    def product(v, weights, x, y):
        return jax.jvp(lambda w: gradient(w, x, y), (weights,), (v,))[1]

    return (lambda v: product(v, weights, x, y)), np.asarray(weights)


def top_hessian_eigenvalue(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    iterations: int = ITERATIONS,
    tolerance: float = TOLERANCE,
    seed: int = 0,
) -> TopEigenvalue:
    """`λ_max` of the training loss's Hessian over all trainable weights, dropout off.

    Args:
        model: a compiled Keras model at the weights to measure.
        x, y: the digits (as the model takes them) and their loss targets, one batch.
        iterations: Hessian-vector products per run at most (default 100).
        tolerance: the residual `|H v − λ v| / |λ|` that ends a run (default 1e-2).
        seed: draws the starting vector (default 0).

    Returns:
        A `TopEigenvalue`.
    """
    hvp, weights = hessian_vector_product(model, x, y)
    return power_iteration(
        lambda v: np.asarray(hvp(v.astype(np.float32)), np.float64),
        len(weights),
        iterations=iterations,
        tolerance=tolerance,
        seed=seed,
    )


def power_iteration(
    matvec: Callable[[np.ndarray], np.ndarray],
    size: int,
    *,
    iterations: int = ITERATIONS,
    tolerance: float = TOLERANCE,
    seed: int = 0,
) -> TopEigenvalue:
    """The top (most positive) eigenvalue of the symmetric operator `matvec`.

    Power iteration finds the eigenvalue of largest magnitude, `λ`; if it is negative, a
    second run on `v ↦ matvec(v) − λ v` (whose eigenvalues are `μ − λ ≥ 0`) finds the top
    `μ` as its own largest plus `λ`.
    """
    first = _power_run(matvec, size, iterations, tolerance, seed)
    if first.value >= 0:
        return first
    shift = first.value
    second = _power_run(lambda v: matvec(v) - shift * v, size, iterations, tolerance, seed + 1)
    value = second.value + shift
    residual = second.residual * abs(second.value) / abs(value) if value else float("inf")
    return TopEigenvalue(value, first.iterations + second.iterations, second.converged, residual)


def _power_run(matvec, size: int, iterations: int, tolerance: float, seed: int) -> TopEigenvalue:
    """Power iteration from a random unit vector: the eigenvalue of largest magnitude, once
    the residual `|H v − λ v| / |λ|` is at most `tolerance` (or after `iterations`)."""
    v = np.random.default_rng(seed).standard_normal(size)
    v /= np.linalg.norm(v)
    for step in range(1, iterations + 1):
        product = matvec(v)
        value = float(v @ product)
        residual = float(np.linalg.norm(product - value * v) / abs(value)) if value else np.inf
        if residual <= tolerance or step == iterations:
            break
        v = product / np.linalg.norm(product)
    return TopEigenvalue(value, step, residual <= tolerance, residual)
