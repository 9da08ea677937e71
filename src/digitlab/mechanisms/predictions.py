"""Predictions from the mechanisms: steps against examples, and the largest stable rate.

**The trade-off** (McCandlish et al. 2018, §2.3 and eq. 2.11). Training to a fixed loss with
batch `B` takes `S` steps and `E = B S` examples; with `S_min` the fewest steps (any batch)
and `E_min` the fewest examples (any batch),

    (S / S_min − 1) (E / E_min − 1) = 1,   so   S(B) = S_min + E_min / B,   E(B) = E_min + S_min B

and the critical batch `B_crit = E_min / S_min` is where both are twice their minimum. The
paper finds `B_crit ≈ B_noise`, which `B_simple` (`noise_scale`) approximates. The curve can
be had two ways, both here:

- `fit_tradeoff`: `S_min` and `E_min` fitted to measured (batch, steps-to-target) points: `S`
  is linear in `1 / B`, fitted by least squares on the relative error (each point weighted by
  `1 / S`, so the long small-batch runs don't outweigh the rest);
- `anchor_tradeoff`: from the noise scale alone plus one measured point `(B₀, S₀)`: taking
  `B_crit = B_noise`, `S_min = S₀ / (1 + B_noise / B₀)` and `E_min = S_min B_noise`. This is
  the *prediction*: it uses no point but the anchor, so the other batch sizes test it.

**The largest stable rate** (LeCun et al. 1998, §5.1; Goh 2017, "Why Momentum Really Works"):
on a quadratic with top Hessian eigenvalue `λ_max`, gradient descent at rate `η` converges only
if `η < 2 / λ_max`; with heavy-ball momentum `β` (Keras's SGD `momentum`), `η < 2 (1 + β) /
λ_max`. Near a minimum a network's loss is such a quadratic, so this is the rate above which
plain SGD diverges. Adam rescales each weight's step and escapes this bound.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tradeoff:
    """The steps–examples trade-off `(S / S_min − 1)(E / E_min − 1) = 1`.

    Attributes:
        s_min: the fewest steps to the target, with a batch as large as needed.
        e_min: the fewest examples to the target, as batches shrink (`E → E_min` as `B → 0`).
        method: how `s_min` and `e_min` were found ("fit to N points", "anchored ...").
    """

    s_min: float
    e_min: float
    method: str

    @property
    def critical_batch(self) -> float:
        """`B_crit = E_min / S_min`: the batch at twice the fewest steps and examples."""
        return self.e_min / self.s_min

    def steps(self, batch_size: float | np.ndarray) -> float | np.ndarray:
        """Predicted steps to the target at `batch_size`: `S = S_min + E_min / B`."""
        return self.s_min + self.e_min / np.asarray(batch_size, np.float64)

    def examples(self, batch_size: float | np.ndarray) -> float | np.ndarray:
        """Predicted examples to the target at `batch_size`: `E = E_min + S_min B`."""
        return self.e_min + self.s_min * np.asarray(batch_size, np.float64)

    def to_dict(self) -> dict[str, float | str]:
        """The fields and `critical_batch`, for a JSON record."""
        return {**dataclasses.asdict(self), "critical_batch": self.critical_batch}


def fit_tradeoff(batch_sizes: np.ndarray, steps: np.ndarray) -> Tradeoff:
    """`S_min`, `E_min` fitted to measured steps-to-target at two or more batch sizes.

    Least squares of `S = S_min + E_min / B` with residuals relative to `S`.

    Raises:
        ValueError: fewer than two batch sizes, or a fit with `S_min ≤ 0` or `E_min ≤ 0`
            (the points don't follow the trade-off: more steps with larger batches).
    """
    batch_sizes = np.asarray(batch_sizes, np.float64)
    steps = np.asarray(steps, np.float64)
    if len(np.unique(batch_sizes)) < 2:
        raise ValueError("fitting the trade-off needs steps at two batch sizes at least")
    e_min, s_min = np.polyfit(1 / batch_sizes, steps, 1, w=1 / steps)
    if s_min <= 0 or e_min <= 0:
        raise ValueError(
            f"the points don't follow S = S_min + E_min / B (fit: S_min {s_min:.3g}, "
            f"E_min {e_min:.3g}): larger batches did not take fewer steps"
        )
    return Tradeoff(float(s_min), float(e_min), f"fit to {len(steps)} points")


def anchor_tradeoff(noise_scale: float, batch_size: float, steps: float) -> Tradeoff:
    """The trade-off predicted from a noise scale and one measured point.

    Args:
        noise_scale: `B_noise` (e.g. `B_simple`), taken as the critical batch.
        batch_size, steps: the anchor, `(B₀, S₀)`: steps to the target measured at `B₀`.

    Returns:
        A `Tradeoff` with `S_min = S₀ / (1 + B_noise / B₀)`, `E_min = S_min B_noise`.
    """
    if noise_scale <= 0 or batch_size <= 0 or steps <= 0:
        raise ValueError("the noise scale, batch size and steps must all be positive")
    s_min = steps / (1 + noise_scale / batch_size)
    method = f"anchored at batch {batch_size:g} with B_noise {noise_scale:.3g}"
    return Tradeoff(float(s_min), float(s_min * noise_scale), method)


def max_stable_learning_rate(top_eigenvalue: float, momentum: float = 0.0) -> float:
    """The largest rate at which (momentum) SGD is stable: `2 (1 + β) / λ_max`.

    Args:
        top_eigenvalue: `λ_max` of the loss's Hessian (`top_hessian_eigenvalue`).
        momentum: heavy-ball momentum `β` in [0, 1) (default 0, Keras's SGD default).
    """
    if top_eigenvalue <= 0:
        raise ValueError(f"λ_max must be positive, got {top_eigenvalue}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    return 2 * (1 + momentum) / top_eigenvalue
