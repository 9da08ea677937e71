"""The mechanisms of issue 21 against oracles: closed forms, jax.hessian, numpy's eigenvalues.

- the gradient noise scale against the closed form of linear regression with Gaussian inputs
  and noise, and each estimator against the other and against numpy's covariance;
- the Hessian's top eigenvalue against `jax.hessian` and `numpy.linalg.eigvalsh`;
- the input conditioning against `numpy.linalg.cond` and `eigvalsh`;
- each prediction's formula against the behaviour it predicts (gradient descent on a
  quadratic, Gaussian draws, the trade-off's own equation).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")

import jax
import keras
from jax.flatten_util import ravel_pytree

from digitlab.data import PIXEL_MAX
from digitlab.mechanisms import (
    anchor_tradeoff,
    fit_tradeoff,
    gradient_noise,
    input_conditioning,
    max_stable_learning_rate,
    noise_scale,
    noise_scale_two_batches,
    scale_inputs,
    sigmoid_saturation,
    top_hessian_eigenvalue,
)
from digitlab.mechanisms.gradient_noise import (
    per_example_estimate,
    two_batch_estimate,
)
from digitlab.mechanisms.hessian import hessian_vector_product, power_iteration
from digitlab.mechanisms.loss import training_loss
from digitlab.mechanisms.saturation import (
    predicted_saturated_share,
    saturation_threshold,
)


def _tiny_classifier(seed: int = 0, dropout: float = 0.0) -> keras.Model:
    """4 inputs → 3 tanh units (→ dropout) → 3 logits, sparse cross-entropy from logits."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((4,)), keras.layers.Dense(3, activation="tanh")]
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    model = keras.Sequential([*layers, keras.layers.Dense(3)])
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    return model


def _tiny_data(count: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, 4)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int32) + (x[:, 2] > 1)


# --- the loss every mechanism differentiates -----------------------------------------------


def test_the_loss_is_the_compiled_loss_with_dropout_off():
    model = _tiny_classifier(dropout=0.5)
    x, y = _tiny_data(64)
    loss = training_loss(model)
    value = float(loss.function(loss.weights, x, y))
    assert value == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-5)  # inference mode
    assert float(loss.function(loss.weights, x, y)) == value  # no random dropout mask


def test_an_uncompiled_model_is_refused():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="compile the model"):
        training_loss(model)


# --- the gradient noise scale ---------------------------------------------------------------


def test_the_unbiased_estimates_by_hand():
    # g = (1, 0), (3, 0), (2, 3): ḡ = (2, 1), |ḡ|² = 5, Σ|g_i|² = 23,
    # tr Σ = (23 − 3·5) / 2 = 4, |G|² = 5 − 4/3.
    trace, norm_sq = per_example_estimate(np.array([6.0, 3.0]), 23.0, 3)
    assert trace == pytest.approx(4.0)
    assert norm_sq == pytest.approx(11 / 3)
    # |G_2|² = 2 + 4/2 = 4 and |G_8|² = 2 + 4/8 = 2.5 give back tr Σ = 4, |G|² = 2.
    trace, norm_sq = two_batch_estimate(2, 8, 4.0, 2.5)
    assert (trace, norm_sq) == (pytest.approx(4.0), pytest.approx(2.0))


def test_per_example_noise_scale_matches_numpy_covariance_of_looped_gradients(monkeypatch):
    monkeypatch.setattr(gradient_noise, "CHUNK_EXAMPLES", 8)  # 37 digits: a padded last chunk
    model = _tiny_classifier()
    x, y = _tiny_data(37)
    loss = training_loss(model)
    gradient = jax.grad(loss.function)
    rows = [ravel_pytree(gradient(loss.weights, x[i : i + 1], y[i : i + 1]))[0] for i in range(37)]
    per_example = np.asarray(rows, np.float64)
    trace = np.trace(np.cov(per_example.T))  # ddof=1: unbiased
    mean = per_example.mean(axis=0)
    norm_sq = mean @ mean - trace / 37

    measured = noise_scale(model, x, y)
    assert measured.trace_covariance == pytest.approx(trace, rel=1e-5)
    assert measured.gradient_norm_sq == pytest.approx(norm_sq, rel=1e-4)
    assert measured.simple == pytest.approx(trace / norm_sq, rel=1e-4)
    assert (measured.examples, measured.method) == (37, "per-example")

    # The jackknife, directly: leave out each of 10 groups of consecutive digits (37 · k // 10).
    group = np.arange(37) * 10 // 37
    left_out = []
    for k in range(10):
        kept = per_example[group != k]
        kept_trace = np.trace(np.cov(kept.T))
        kept_mean = kept.mean(axis=0)
        left_out.append(kept_trace / (kept_mean @ kept_mean - kept_trace / len(kept)))
    error = np.sqrt(9 / 10 * np.sum((np.array(left_out) - np.mean(left_out)) ** 2))
    assert measured.standard_error == pytest.approx(error, rel=1e-3)


def test_two_batch_estimator_equals_per_example_at_batches_of_one_and_of_all():
    model = _tiny_classifier()
    x, y = _tiny_data(300)
    per_example = noise_scale(model, x, y)
    two_batches = noise_scale_two_batches(model, x, y, small_batch=1, big_batch=300)
    assert two_batches.trace_covariance == pytest.approx(per_example.trace_covariance, rel=1e-4)
    assert two_batches.gradient_norm_sq == pytest.approx(per_example.gradient_norm_sq, rel=1e-3)
    assert two_batches.method == "two batch sizes (1, 300)"


def _linear_regression(
    dimensions: int, delta: np.ndarray, noise: float, count: int, seed: int = 0
) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    """`y = w*ᵀx + ε`, `x ~ N(0, I)`, `ε ~ N(0, noise²)`; the model's weights are `w* + δ`."""
    rng = np.random.default_rng(seed)
    true_weights = rng.standard_normal(dimensions)
    x = rng.standard_normal((count, dimensions))
    y = x @ true_weights + noise * rng.standard_normal(count)
    model = keras.Sequential([keras.Input((dimensions,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(optimizer="sgd", loss="mse")
    model.layers[0].kernel.assign((true_weights + delta).reshape(-1, 1).astype(np.float32))
    return model, x.astype(np.float32), y.reshape(-1, 1).astype(np.float32)


def test_noise_scale_matches_the_closed_form_of_linear_regression():
    # Loss (xᵀδ − ε)² (Keras's mse, no ½): g = 2x(xᵀδ − ε), G = E[g] = 2δ, and by Isserlis
    # E[g gᵀ] = 4(2δδᵀ + |δ|² I + σ² I), so Σ = 4(δδᵀ + (|δ|² + σ²) I):
    # tr Σ = 4((d + 1)|δ|² + d σ²), |G|² = 4|δ|², B_simple = ((d + 1)|δ|² + d σ²) / |δ|².
    d, sigma = 4, 1.0
    delta = np.full(d, 0.5)  # |δ|² = 1
    trace, norm_sq = 4 * ((d + 1) * 1.0 + d * sigma**2), 4 * 1.0  # 36 and 4: B_simple 9
    model, x, y = _linear_regression(d, delta, sigma, 40_000)
    # 40,000 draws: the estimates' relative spread is about 1% (a simulation of 200 seeds),
    # so 5% is a 4.5-sigma bound that a wrong formula (a missing factor) cannot meet.
    for measured in (
        noise_scale(model, x, y),
        noise_scale_two_batches(model, x, y, small_batch=4, big_batch=400),
    ):
        assert measured.trace_covariance == pytest.approx(trace, rel=0.05), measured.method
        assert measured.gradient_norm_sq == pytest.approx(norm_sq, rel=0.05), measured.method
        assert measured.simple == pytest.approx(9.0, rel=0.05), measured.method


def test_the_jackknife_error_measures_the_spread_over_samples(monkeypatch):
    # B_simple from 40,000 draws (the closed-form case above) spreads by 0.109 from sample to
    # sample (400 simulated samples, NumPy). 40 groups: the jackknife's own relative error is
    # about 1/sqrt(2·39) = 11%, so [0.6, 1.5] × the spread is a 4-sigma band.
    monkeypatch.setattr(gradient_noise, "JACKKNIFE_GROUPS", 40)
    model, x, y = _linear_regression(4, np.full(4, 0.5), 1.0, 40_000, seed=5)
    assert 0.6 * 0.109 < noise_scale(model, x, y).standard_error < 1.5 * 0.109


def test_a_noise_scale_the_sample_cannot_resolve_is_infinite_not_negative():
    # Two digits pulling w = 0 opposite ways: g = −2 and +2, ḡ = 0, tr Σ = 8, |G|² = 0 − 8/2.
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(optimizer="sgd", loss="mse")
    model.layers[0].kernel.assign(np.zeros((1, 1), np.float32))
    x, y = np.ones((2, 1), np.float32), np.array([[1.0], [-1.0]], np.float32)
    measured = noise_scale(model, x, y)
    assert (measured.trace_covariance, measured.gradient_norm_sq) == (8.0, -4.0)
    assert measured.simple == float("inf")


# --- the Hessian's top eigenvalue -----------------------------------------------------------


def _full_hessian(model: keras.Model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    loss = training_loss(model)
    flat, unravel = ravel_pytree(loss.weights)
    return np.asarray(jax.hessian(lambda w: loss.function(unravel(w), x, y))(flat), np.float64)


def test_hessian_vector_products_are_the_hessian_times_the_vector():
    model = _tiny_classifier()
    x, y = _tiny_data(50)
    hessian = _full_hessian(model, x, y)
    hvp, weights = hessian_vector_product(model, x, y)
    v = np.random.default_rng(0).standard_normal(len(weights)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(hvp(v)), hessian @ v, rtol=1e-4, atol=1e-5)


# seed 2: the top eigenvalue (0.55) is the largest in magnitude; seed 3: −0.76 is, and the top
# (0.598) needs the shifted second run, next to a close 0.572.
@pytest.mark.parametrize("seed", [2, 3])
def test_top_eigenvalue_matches_jax_hessian_and_eigvalsh(seed):
    model = _tiny_classifier(seed=seed)
    x, y = _tiny_data(50)
    eigenvalues = np.linalg.eigvalsh(_full_hessian(model, x, y))
    assert eigenvalues[-1] > 0
    top = top_hessian_eigenvalue(model, x, y, iterations=2000, tolerance=1e-4)
    assert top.converged
    assert top.value == pytest.approx(eigenvalues[-1], rel=1e-4)
    assert top.residual <= 1e-3


def test_power_iteration_finds_the_top_eigenvalue_past_a_larger_negative_one():
    rotation, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((5, 5)))
    matrix = rotation @ np.diag([-6.0, 3.0, 1.0, 0.5, -1.0]) @ rotation.T
    top = power_iteration(lambda v: matrix @ v, 5, iterations=5000, tolerance=1e-9)
    assert top.value == pytest.approx(3.0, rel=1e-6)
    assert top.converged


# --- conditioning -----------------------------------------------------------------------------


def _correlated(count: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((5, 5)) + np.diag([5.0, 2, 1, 0.5, 0.1])
    x = rng.standard_normal((count, 5)) @ mixing + rng.uniform(0, 3, 5)
    return np.column_stack([x, np.full(count, 0.25)])  # a constant "border pixel" last


def test_condition_number_matches_numpy_with_the_constant_pixel_dropped():
    x = _correlated()
    covariance = np.cov(x[:, :5].T, bias=True)
    found = input_conditioning(x)
    assert found.condition_number == pytest.approx(np.linalg.cond(covariance), rel=1e-9)
    eigenvalues = np.linalg.eigvalsh(covariance)
    assert found.top == pytest.approx(eigenvalues[-1], rel=1e-12)
    assert found.top_to_median == pytest.approx(eigenvalues[-1] / np.median(eigenvalues))
    assert (found.dimensions, found.constant_pixels, found.null_directions) == (5, 1, 0)
    second_moment = x[:, :5].T @ x[:, :5] / len(x)  # the uncentred Hessian of a linear unit
    uncentred = input_conditioning(x, centred=False)
    assert uncentred.condition_number == pytest.approx(np.linalg.cond(second_moment), rel=1e-9)


def test_a_duplicated_pixel_is_a_null_direction_left_out_of_kappa():
    x = _correlated()
    doubled = np.column_stack([x[:, :5], x[:, 0]])  # pixel 1 twice: a zero eigenvalue
    eigenvalues = np.linalg.eigvalsh(np.cov(doubled.T, bias=True))
    assert abs(eigenvalues[0]) < 1e-12 * eigenvalues[-1]
    found = input_conditioning(doubled)
    assert (found.dimensions, found.null_directions) == (6, 1)
    assert found.smallest == pytest.approx(eigenvalues[1], rel=1e-9)
    assert found.condition_number == pytest.approx(eigenvalues[-1] / eigenvalues[1], rel=1e-9)


def test_the_scalings():
    pixels = np.random.default_rng(0).uniform(0, 1, (300, 6))
    pixels[:, 5] = 0.0  # a border pixel
    raw, unit = scale_inputs(pixels, "raw"), scale_inputs(pixels, "unit")
    np.testing.assert_allclose(raw, pixels * PIXEL_MAX)
    same, scaled = input_conditioning(unit), input_conditioning(raw)
    assert scaled.condition_number == pytest.approx(same.condition_number, rel=1e-9)
    assert scaled.top == pytest.approx(same.top * PIXEL_MAX**2, rel=1e-9)
    standard = scale_inputs(pixels, "standardize")
    np.testing.assert_allclose(standard[:, :5].std(axis=0), 1.0)
    np.testing.assert_allclose(standard.mean(axis=0), 0.0, atol=1e-12)
    assert not standard[:, 5].any()  # the constant pixel is centred, not divided by 0
    white = scale_inputs(_correlated(), "whiten")
    assert white.shape == (400, 5)  # the constant column has no component
    assert input_conditioning(white).condition_number == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="unknown scaling"):
        scale_inputs(pixels, "sqrt")


# --- predictions --------------------------------------------------------------------------------


def test_the_tradeoff_curve_satisfies_its_equation():
    curve = anchor_tradeoff(noise_scale=200.0, batch_size=32, steps=5_000)
    batches = np.array([1.0, 32, 200, 1024, 60_000])
    steps, examples = curve.steps(batches), curve.examples(batches)
    np.testing.assert_allclose(examples, steps * batches)  # E = B·S
    product = (steps / curve.s_min - 1) * (examples / curve.e_min - 1)
    np.testing.assert_allclose(product, 1.0)
    assert curve.steps(32) == pytest.approx(5_000)  # through the anchor
    assert curve.critical_batch == pytest.approx(200.0)  # B_crit = B_noise
    assert curve.steps(200) == pytest.approx(2 * curve.s_min)
    assert curve.examples(200) == pytest.approx(2 * curve.e_min)


def test_fit_tradeoff_recovers_the_curve_and_refuses_points_off_it():
    batches = np.array([16, 64, 256, 1024])
    fitted = fit_tradeoff(batches, 300 + 60_000 / batches)
    assert (fitted.s_min, fitted.e_min) == (pytest.approx(300), pytest.approx(60_000))
    assert fitted.to_dict()["critical_batch"] == pytest.approx(200)
    with pytest.raises(ValueError, match="larger batches did not take fewer steps"):
        fit_tradeoff(batches, 10 * batches)
    with pytest.raises(ValueError, match="two batch sizes"):
        fit_tradeoff([32, 32], [100, 110])


def _gradient_descent_grows(rate: float, top: float, momentum: float = 0.0) -> bool:
    """Heavy-ball gradient descent (Keras's SGD) on ½ wᵀ diag(top, 0.1) w, from (1, 1)."""
    curvature = np.array([top, 0.1])
    weights, velocity = np.ones(2), np.zeros(2)
    for _ in range(2_000):
        velocity = momentum * velocity - rate * curvature * weights
        weights = weights + velocity
    return bool(np.abs(weights[0]) > 1)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_the_largest_stable_rate_separates_convergence_from_divergence(momentum):
    bound = max_stable_learning_rate(40.0, momentum=momentum)
    assert not _gradient_descent_grows(0.99 * bound, 40.0, momentum)
    assert _gradient_descent_grows(1.01 * bound, 40.0, momentum)


# --- saturation ----------------------------------------------------------------------------------


def test_the_saturation_threshold_is_where_the_sigmoid_reaches_the_margin():
    threshold = saturation_threshold(0.01)
    assert 1 / (1 + np.exp(-threshold)) == pytest.approx(0.99)


def test_the_gaussian_saturated_share_matches_draws():
    rng = np.random.default_rng(0)
    scales, offsets = np.array([1.0, 3.0, 10.0]), np.array([0.0, 2.0])
    draws = offsets + scales[:, None, None] * rng.standard_normal((3, 200_000, 2))
    measured = np.mean(np.abs(draws) > 4.6)
    assert predicted_saturated_share(scales, 4.6, offsets) == pytest.approx(measured, abs=3e-3)


def test_predicted_saturation_tracks_the_measured_one_and_the_input_scale():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((50,)),
            keras.layers.Rescaling(20.0),  # large inputs: a part of the units saturate
            keras.layers.Dense(400, activation="sigmoid"),
            keras.layers.Dense(3, activation="relu"),  # not a sigmoid: not reported
        ]
    )
    x = np.random.default_rng(1).uniform(0, 1, (200, 50)).astype(np.float32)
    (first,) = sigmoid_saturation(model, x)
    assert 0.2 < first.measured < 0.9
    assert first.predicted == pytest.approx(first.measured, abs=0.03)
    z = (x * 20.0) @ np.asarray(model.layers[1].kernel) + np.asarray(model.layers[1].bias)
    assert first.measured == pytest.approx(np.mean(np.abs(z) > saturation_threshold()))
    assert first.scale == pytest.approx(first.measured_scale, rel=0.1)


def test_the_numpy_parts_import_no_jax():
    code = (
        "import sys; import digitlab.mechanisms.conditioning, digitlab.mechanisms.predictions;"
        "print('jax' in sys.modules or 'keras' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "False", result.stderr
