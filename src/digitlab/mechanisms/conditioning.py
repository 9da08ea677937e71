"""How the input's scaling conditions learning: the eigenvalue spread of its covariance.

LeCun, Bottou, Orr & Müller 1998, "Efficient BackProp", §4.3–4.4 (and §5): for a linear unit
`ŷ = wᵀx` under the squared error, the Hessian is the inputs' second moment

    H = E[x xᵀ]                  (uncentred: the Hessian on the inputs as they are)
    H = E[(x − μ)(x − μ)ᵀ]       (the covariance: the Hessian once the inputs are centred)

Gradient descent's largest stable rate is `2 / λ_max(H)` and its slowest direction converges
at the rate `λ_min / λ_max`, so the *condition number* `κ = λ_max / λ_min` says how many more
steps the slowest direction needs than the fastest. Centring removes the mean's large
eigenvalue from `E[x xᵀ]`; scaling every input to unit variance evens the diagonal;
whitening (PCA) makes `H = I`, `κ = 1`.

**Zero-variance pixels.** MNIST's border pixels are 0 in every digit: their rows and columns
of `H` are 0, `λ_min = 0` and `κ` is infinite, though no gradient ever moves their weights
(they do not slow learning; they are simply never learned). They are dropped before the
spectrum is taken, and counted (`constant_pixels`). What remains can still be numerically
singular (two pixels inked in the same few digits only): eigenvalues at or below numpy's
rank tolerance (`λ_max · D · ε`, as `numpy.linalg.matrix_rank`) are counted as
`null_directions` and left out of `κ`. Because the smallest eigenvalue of a real image set is
so fragile, the spread is also given as `λ_max / median λ`, which a few tiny eigenvalues
cannot move. Standardising leaves a constant pixel centred and unscaled (scikit-learn's
`StandardScaler` does the same), so it stays constant and is dropped here too.

NumPy only: no Keras, no JAX.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from digitlab.data import PIXEL_MAX

# The input scalings: raw pixels (0–255), the notebook's /255 (0–1), each pixel standardised
# (zero mean, unit variance over the digits), and PCA-whitened (decorrelated, unit variance).
SCALINGS = ("raw", "unit", "standardize", "whiten")


@dataclass(frozen=True)
class Conditioning:
    """The eigenvalue spread of an input covariance (or second moment).

    Attributes:
        top: `λ_max`, which sets the largest stable rate of a linear unit, `2 / λ_max`.
        median: the median eigenvalue (over the non-null ones).
        smallest: the smallest non-null eigenvalue.
        condition_number: `κ = top / smallest`.
        top_to_median: `top / median`.
        dimensions: the inputs that vary over the digits (the matrix's size).
        constant_pixels: inputs with the same value in every digit, dropped.
        null_directions: eigenvalues at or below the rank tolerance, left out of `κ`.
    """

    top: float
    median: float
    smallest: float
    condition_number: float
    top_to_median: float
    dimensions: int
    constant_pixels: int
    null_directions: int

    def to_dict(self) -> dict[str, float | int]:
        """The fields, for a JSON record."""
        return dataclasses.asdict(self)


def spectrum_conditioning(eigenvalues: np.ndarray, constant_pixels: int = 0) -> Conditioning:
    """The spread of a positive semi-definite matrix's eigenvalues.

    Args:
        eigenvalues: all of them (e.g. from `numpy.linalg.eigvalsh`), at least one positive.
        constant_pixels: inputs dropped before the matrix was formed, to report (default 0).
    """
    values = np.sort(np.asarray(eigenvalues, np.float64))[::-1]
    top = float(values[0])
    if top <= 0:
        raise ValueError("the matrix has no positive eigenvalue: the inputs never vary")
    tolerance = top * len(values) * np.finfo(np.float64).eps  # numpy.linalg.matrix_rank's
    kept = values[values > tolerance]
    median, smallest = float(np.median(kept)), float(kept[-1])
    return Conditioning(
        top=top,
        median=median,
        smallest=smallest,
        condition_number=top / smallest,
        top_to_median=top / median,
        dimensions=len(values),
        constant_pixels=constant_pixels,
        null_directions=len(values) - len(kept),
    )


def input_conditioning(x: np.ndarray, *, centred: bool = True) -> Conditioning:
    """The conditioning of the inputs' covariance (or, `centred=False`, their second moment).

    Args:
        x: the inputs, N × D (any shape N × …, flattened), as the network would see them.
        centred: `E[(x − μ)(x − μ)ᵀ]` (default) or `E[x xᵀ]`, the Hessian of a linear unit
            on the inputs as they are (LeCun et al. 1998, §4.3).
    """
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    varying = np.ptp(flat, axis=0) > 0
    flat = flat[:, varying]
    if centred:
        flat = flat - flat.mean(axis=0)
    moment = flat.T @ flat / len(flat)
    return spectrum_conditioning(np.linalg.eigvalsh(moment), int((~varying).sum()))


def scale_inputs(pixels: np.ndarray, scaling: str) -> np.ndarray:
    """The digits under one of `SCALINGS`, from pixels scaled to [0, 1] (`prepare_inputs`).

    Args:
        pixels: N × D (or N × …, flattened) in [0, 1], the notebook's input.
        scaling: "raw" (× PIXEL_MAX, 0–255), "unit" (as given), "standardize" (each pixel
            centred and divided by its standard deviation over these digits; a constant
            pixel is only centred) or "whiten" (PCA whitening over these digits, keeping
            the components whose variance is above numpy's rank tolerance, `λ_max · D · ε`:
            fewer than D columns).

    Returns:
        N × D float64 (N × rank for "whiten").
    """
    flat = np.asarray(pixels, np.float64).reshape(len(pixels), -1)
    if scaling == "raw":
        return flat * PIXEL_MAX
    if scaling == "unit":
        return flat
    if scaling == "standardize":
        std = flat.std(axis=0)
        return (flat - flat.mean(axis=0)) / np.where(std > 0, std, 1.0)
    if scaling == "whiten":
        from sklearn.decomposition import PCA

        # From the covariance's eigenvectors (D × D): far quicker than an SVD of N × D.
        pca = PCA(whiten=True, svd_solver="covariance_eigh").fit(flat)
        variances = pca.explained_variance_
        kept = variances > variances[0] * len(variances) * np.finfo(np.float64).eps
        return pca.transform(flat)[:, kept]
    raise ValueError(f"unknown scaling {scaling!r}; choose from {', '.join(SCALINGS)}")
