"""Outlier exposure (`--outlier-exposure`): what the fit sees, metrics, refusals, the effect."""

from __future__ import annotations

import numpy as np
import pytest

import digitlab
from digitlab import exposure, fastfit, ood, outliers
from digitlab.config import Spec, TrainConfig, with_overrides
from digitlab.errors import SpecError
from digitlab.model import DigitAccuracy, MacroRecall


def _train(**settings) -> TrainConfig:
    return TrainConfig(**settings)


def test_without_exposure_the_fit_sees_the_digits_as_they_are(mnist):
    (x, y), _ = mnist
    digits, labels = x[:100], y[:100]
    got = exposure.fit_data(digits, labels, _train(validation_split=0.1))
    assert got[0] is digits and got[1] is labels
    assert got[2] is None  # fastfit splits the validation digits off itself


def test_non_digits_join_the_training_part_with_uniform_targets(mnist):
    (x, y), _ = mnist
    x, y = x[:2000].reshape(-1, 784), np.eye(10, dtype=np.float32)[y[:2000]]
    train = _train(outlier_exposure=0.25, validation_split=0.1, seed=3)
    fit_x, fit_y, validation = exposure.fit_data(x, y, train)
    kept_x, kept_y, (val_x, val_y) = fastfit.split(x, y, 0.1)
    np.testing.assert_array_equal(val_x, validation[0])  # validation: the same digits as
    np.testing.assert_array_equal(val_y, validation[1])  # without exposure, and digits only
    np.testing.assert_array_equal(fit_x[: len(kept_x)], kept_x)
    np.testing.assert_array_equal(fit_y[: len(kept_x)], kept_y)
    others = fit_y[len(kept_x) :]
    assert abs(len(others) - 0.25 * len(kept_x)) <= len(outliers.KINDS) / 2  # rounded per kind
    np.testing.assert_allclose(others, 0.1)
    assert fit_x.shape[1:] == (784,) and fit_x.dtype == np.uint8
    again = exposure.fit_data(x, y, train)[0]
    np.testing.assert_array_equal(again, fit_x)  # the run's seed: the same examples
    other_seed = exposure.fit_data(x, y, _train(outlier_exposure=0.25, validation_split=0.1))
    assert not np.array_equal(other_seed[0], fit_x)


def test_metrics_count_the_digits_and_leave_the_non_digits_out():
    truth = np.array([[0, 1, 0], [1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], np.float32)
    guess = np.array([[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.9, 0.05, 0.05]], np.float32)
    accuracy = DigitAccuracy()
    accuracy.update_state(truth, guess)
    assert float(accuracy.result()) == pytest.approx(0.5)  # 1 of the 2 digits; not 2 of 3
    assert accuracy.name == "accuracy"  # the history's key, as without exposure
    recall = MacroRecall(num_classes=3)
    recall.update_state(truth, guess)
    matrix = np.asarray(recall.matrix)
    assert matrix.sum() == 2 and matrix[0, 0] == 0  # the non-digit predicted 0 isn't counted


def test_exposure_is_refused_where_it_cannot_mean_anything():
    with pytest.raises(SpecError, match="trains on the digits only"):
        _train(outlier_exposure=0.2, dataset="fashion-mnist")
    with pytest.raises(SpecError, match="with cross-entropy, not mean_squared_error"):
        _train(outlier_exposure=0.2, loss="mse")
    with pytest.raises(SpecError, match="must be at most 1.0, got 1.5"):
        _train(outlier_exposure=1.5)
    assert _train(outlier_exposure=0.2).fit_loss == "categorical_crossentropy"
    assert _train(outlier_exposure=0.2).one_hot and not _train().one_hot


def test_the_cli_refuses_it_for_garments_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from digitlab.cli import app

    args = ["train", "--outlier-exposure", "0.2", "--dataset", "fashion-mnist"]
    result = CliRunner().invoke(app, [*args, "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "trains on the digits only" in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_an_exposed_network_spreads_its_probability_over_non_digits(tmp_path):
    layers = ({"type": "Dense", "units": 64, "activation": "relu"}, {"type": "Dense", "units": 10})
    base = Spec(name="oe", layers=layers, train=TrainConfig(epochs=3, train_samples=5000))
    families = ood.generate(100, seed=5)
    others = np.concatenate([families["scribbles"], families["shapes"]])
    top = {}
    for share in (0.0, 0.3):
        spec = with_overrides(base, outlier_exposure=share)
        run = digitlab.train(spec, runs_dir=tmp_path, verbose=0, calibrate=False)
        assert run.metrics.test_accuracy > 0.85, share  # still reads digits
        top[share] = run.predict_proba(others).max(axis=1).mean()
    # Exposed, it spreads its probability over scribbles and shapes (measured: 0.65 → 0.38).
    assert top[0.3] < top[0.0] - 0.2, top
