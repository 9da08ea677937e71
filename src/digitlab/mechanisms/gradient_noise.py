"""The gradient noise scale: how large a batch can be before it stops paying for itself.

McCandlish, Kaplan, Amodei et al. 2018, "An empirical model of large-batch training"
(arXiv:1812.06162), §2.2: with `G` the true gradient of the loss and `Σ` the covariance of
one example's gradient (so a batch of `B` has covariance `Σ / B`), the *simple noise scale*

    B_simple = tr(Σ) / |G|²                                              (eq. 2.8)

is the batch at which the noise in a batch's gradient is as large as the gradient itself. It
approximates the critical batch size `B_crit` (§2.3) when the Hessian is close to a multiple
of the identity; `digitlab.mechanisms.predictions` turns it into a trade-off curve.

Two estimators, which agree exactly when `small_batch = 1` and `big_batch` is every digit
(tested), and in expectation otherwise:

- `noise_scale`: every example's own gradient, with `jax.vmap` of `jax.grad`. With `N`
  examples, per-example gradients `g_i` and their mean `ḡ`, the unbiased estimates are

      tr Σ ≈ Σ_i |g_i − ḡ|² / (N − 1)      |G|² ≈ |ḡ|² − tr Σ / N

  (`E|ḡ|² = |G|² + tr Σ / N`: the correction removes the noise from the squared mean).
- `noise_scale_two_batches`: the paper's Appendix A, from the squared norms of batch
  gradients at two batch sizes, each averaged over disjoint batches before the ratio (the
  paper's advice: the two estimates are unbiased, their ratio is not):

      |G|² ≈ (B_big |G_big|² − B_small |G_small|²) / (B_big − B_small)     (eq. A.2)
      tr Σ ≈ (|G_small|² − |G_big|²) / (1 / B_small − 1 / B_big)           (eq. A.3)

The digits given are treated as a sample of the distribution the noise is defined over (the
training digits SGD draws from). The loss is `training_loss`'s: the compiled loss with
**dropout off**. Either estimator takes a model at fixed weights: the caller trains it between
measurements (the paper's noise scale grows as the loss falls).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import keras
import numpy as np

from digitlab.mechanisms.loss import TrainingLoss, flat_gradient, training_loss

# Examples whose gradients are held at once: 256 × the seed network's 99,710 weights × 4 bytes
# is 100 MB, and a larger chunk is no faster on 2 cores.
CHUNK_EXAMPLES = 256
# Groups of digits the per-example estimate leaves out in turn for its standard error.
JACKKNIFE_GROUPS = 10


@dataclass(frozen=True)
class NoiseScale:
    """One measurement of the gradient noise scale.

    Attributes:
        simple: `B_simple = tr Σ / |G|²`, in examples; `inf` when the estimate of `|G|²` is
            not positive (the sample cannot tell the gradient from its noise: measure on
            more digits).
        trace_covariance: `tr Σ`, the per-example gradient's total variance.
        gradient_norm_sq: `|G|²`, the squared norm of the true gradient.
        examples: the digits measured on.
        method: "per-example" or "two batch sizes (B_small, B_big)".
        standard_error: `simple`'s jackknife standard error over groups of the digits
            (per-example only; `nan` for two batch sizes, `inf` when a group's estimate is).
    """

    simple: float
    trace_covariance: float
    gradient_norm_sq: float
    examples: int
    method: str
    standard_error: float = float("nan")

    def to_dict(self) -> dict[str, float | int | str]:
        """The fields, for a JSON record."""
        return dataclasses.asdict(self)


def _measurement(
    trace: float, norm_sq: float, examples: int, method: str, error: float = float("nan")
) -> NoiseScale:
    simple = trace / norm_sq if norm_sq > 0 else float("inf")
    return NoiseScale(float(simple), float(trace), float(norm_sq), examples, method, error)


def per_example_estimate(
    gradient_sum: np.ndarray, squared_norm_sum: float, count: int
) -> tuple[float, float]:
    """`(tr Σ, |G|²)` from `N = count` per-example gradients, unbiased.

    Args:
        gradient_sum: `Σ_i g_i`, the sum of the per-example gradients (a flat vector).
        squared_norm_sum: `Σ_i |g_i|²`.
        count: `N`, at least 2.

    Returns:
        `tr Σ = (Σ_i |g_i|² − N |ḡ|²) / (N − 1)` (which is `Σ_i |g_i − ḡ|² / (N − 1)`) and
        `|G|² = |ḡ|² − tr Σ / N`, with `ḡ = gradient_sum / N`.
    """
    if count < 2:
        raise ValueError(f"the noise needs at least 2 examples, got {count}")
    mean = np.asarray(gradient_sum, np.float64) / count
    mean_sq = float(mean @ mean)
    trace = (float(squared_norm_sum) - count * mean_sq) / (count - 1)
    return trace, mean_sq - trace / count


def two_batch_estimate(
    small_batch: int, big_batch: int, small_norm_sq: float, big_norm_sq: float
) -> tuple[float, float]:
    """`(tr Σ, |G|²)` from mean squared batch-gradient norms at two batch sizes (Appendix A).

    Args:
        small_batch, big_batch: `B_small < B_big`.
        small_norm_sq, big_norm_sq: `|G_small|²`, `|G_big|²`: the squared norm of a batch's
            mean gradient, averaged over batches of that size.

    Returns:
        `tr Σ = (|G_small|² − |G_big|²) / (1/B_small − 1/B_big)` and
        `|G|² = (B_big |G_big|² − B_small |G_small|²) / (B_big − B_small)`.
    """
    if not 0 < small_batch < big_batch:
        raise ValueError(f"need 0 < small_batch < big_batch, got {small_batch}, {big_batch}")
    trace = (small_norm_sq - big_norm_sq) / (1 / small_batch - 1 / big_batch)
    norm_sq = (big_batch * big_norm_sq - small_batch * small_norm_sq) / (big_batch - small_batch)
    return float(trace), float(norm_sq)


def noise_scale(model: keras.Model, x: np.ndarray, y: np.ndarray) -> NoiseScale:
    """`B_simple` from every example's own gradient (`jax.vmap`), dropout off, with its
    delete-a-group jackknife standard error (`JACKKNIFE_GROUPS` groups of digits).

    Args:
        model: a compiled Keras model at the weights to measure.
        x, y: the digits (as the model takes them) and their loss targets; at least 2.

    Returns:
        A `NoiseScale` with method "per-example".
    """
    loss = training_loss(model)
    groups = max(1, min(JACKKNIFE_GROUPS, len(x) // 2))
    sums, squared = batch_gradients(loss, x, y, 1, np.arange(len(x)), groups=groups)
    counts = np.bincount(np.arange(len(x)) * groups // len(x), minlength=groups)
    norms = np.bincount(np.arange(len(x)) * groups // len(x), weights=squared)
    trace, norm_sq = per_example_estimate(sums.sum(axis=0), norms.sum(), len(x))
    error = _jackknife(sums, norms, counts) if groups > 1 else float("nan")
    return _measurement(trace, norm_sq, len(x), "per-example", error)


def _jackknife(sums: np.ndarray, norms: np.ndarray, counts: np.ndarray) -> float:
    """The jackknife standard error of `B_simple`, leaving out one group of digits at a time:
    `sqrt((K − 1) / K · Σ_k (B_k − B̄)²)` (Efron & Tibshirani 1993, eq. 11.5)."""
    total, norm_total, count = sums.sum(axis=0), norms.sum(), counts.sum()
    estimates = []
    for k in range(len(counts)):
        left = count - counts[k]
        trace, norm_sq = per_example_estimate(total - sums[k], norm_total - norms[k], left)
        estimates.append(trace / norm_sq if norm_sq > 0 else float("inf"))
    estimates = np.asarray(estimates)
    if not np.isfinite(estimates).all():
        return float("inf")
    return float(np.sqrt((len(estimates) - 1) * np.var(estimates)))


def noise_scale_two_batches(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    small_batch: int = 32,
    big_batch: int | None = None,
    seed: int = 0,
) -> NoiseScale:
    """`B_simple` from batch-gradient norms at two batch sizes (Appendix A), dropout off.

    The digits are shuffled once (`seed`) and cut into disjoint batches of each size (a last
    partial batch is left out); each size's `|G_B|²` is the mean over its batches.

    Args:
        model: a compiled Keras model at the weights to measure.
        x, y: the digits (as the model takes them) and their loss targets.
        small_batch: `B_small` (default 32, the notebook's batch).
        big_batch: `B_big`, at most `len(x)` (default: all the digits, one batch, whose
            `|G_big|²` is then exact for the sample: the least noisy choice).
        seed: draws the shuffle (default 0).

    Returns:
        A `NoiseScale` with method "two batch sizes (B_small, B_big)".
    """
    big_batch = len(x) if big_batch is None else big_batch
    loss = training_loss(model)
    order = np.random.default_rng(seed).permutation(len(x))
    _, small = batch_gradients(loss, x, y, small_batch, order)
    _, big = batch_gradients(loss, x, y, big_batch, order)  # (no jackknife: one big batch)
    trace, norm_sq = two_batch_estimate(small_batch, big_batch, small.mean(), big.mean())
    method = f"two batch sizes ({small_batch}, {big_batch})"
    return _measurement(trace, norm_sq, len(x), method)


def batch_gradients(
    loss: TrainingLoss,
    x: np.ndarray,
    y: np.ndarray,
    batch_size: int,
    order: np.ndarray,
    groups: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """The gradients of the disjoint batches `order` cuts the digits into, summarised.

    Args:
        loss: the training loss to differentiate.
        x, y: the digits and their loss targets.
        batch_size: examples per batch (1: per-example gradients).
        order: the digits' indices; consecutive runs of `batch_size` make the batches, and a
            last partial batch is left out.
        groups: `K`; batch `b` of `n` is in group `b K // n` (default 1: all in one).

    Returns:
        Per group, `Σ_b g_b`, the sum of its batches' mean-loss gradients (K × weights,
        float64), and each batch's `|g_b|²` (float64, one per batch).
    """
    batches = len(order) // batch_size
    if batches == 0:
        raise ValueError(f"batch_size={batch_size} is more than the {len(order)} digits given")
    index = np.asarray(order[: batches * batch_size]).reshape(batches, batch_size)
    per_chunk = max(1, CHUNK_EXAMPLES // batch_size)
    program = _chunk_program(loss)
    group = np.arange(batches) * groups // batches
    total = np.zeros((groups, loss.size), np.float64)
    norms = []
    for start in range(0, batches, per_chunk):
        rows = index[start : start + per_chunk]
        used = len(rows)  # the last chunk is padded to one compiled shape, and masked
        masks = np.zeros((per_chunk, groups), np.float32)  # batch i of the chunk → its group
        masks[np.arange(used), group[start : start + used]] = 1
        rows = np.concatenate([rows, np.repeat(rows[:1], per_chunk - used, axis=0)])
        gradient_sums, squared = program(loss.weights, x[rows], y[rows], masks)
        total += np.asarray(gradient_sums, np.float64)
        norms.append(np.asarray(squared, np.float64)[:used])
    return total, np.concatenate(norms)


def _chunk_program(loss: TrainingLoss):
    """A compiled `(weights, x, y, masks) -> (masksᵀ g, |g_b|²)` over a chunk of batches
    (`x`: batches × batch_size × input; `masks`: batches × groups, 1 where a batch counts)."""
    batch_gradient = jax.vmap(flat_gradient(loss), in_axes=(None, 0, 0))

    @jax.jit
    def program(weights, x, y, masks):
        gradients = batch_gradient(weights, x, y)
        return masks.T @ gradients, jnp.sum(gradients * gradients, axis=1)

    return program
