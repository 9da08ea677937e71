"""The companion (issue 22): a robust second network beside the verifiers, cached per set of
digits, stored with the run as Dense weights and read back in NumPy."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from digitlab import companion, confidence, verifiers
from digitlab.errors import RunError
from digitlab.runs.folder import COMPANION_ARRAYS, STATS_FILE, read_confidence_stats


def _random_companion(rng, widths=(784, 16, 8, 10)) -> dict[str, np.ndarray]:
    weights = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(widths)):
        weights[f"companion_kernel_{i}"] = rng.normal(0, 0.1, (fan_in, fan_out)).astype("f4")
        weights[f"companion_bias_{i}"] = rng.normal(0, 0.1, fan_out).astype("f4")
    return weights


def test_the_numpy_forward_pass_is_the_trained_networks(mnist):
    """What the verdict reads (`companion_probabilities`, from the stored weights) is what the
    Keras network it was trained as answers, and it learned the digits."""
    import keras

    (x_train, y_train), (x_test, y_test) = mnist
    model = companion.fitted_model(x_train[:2000], y_train[:2000], 10, epochs=1)
    weights = companion.dense_weights(model)
    assert sorted(weights) == sorted(f"companion_{name}" for name in companion.WEIGHTS)
    assert sorted(weights) == sorted(COMPANION_ARRAYS)  # what a run folder's check accepts
    ours = companion.companion_probabilities(weights, x_test[:300])
    logits = model.predict(x_test[:300, ..., None].astype("f4") / 255, verbose=0)
    np.testing.assert_allclose(
        ours, keras.ops.convert_to_numpy(keras.ops.softmax(logits)), atol=1e-5
    )
    assert (ours.argmax(axis=1) == y_test[:300]).mean() > 0.6  # one epoch on 2,000 digits


def test_the_companion_is_trained_once_per_set_of_digits(tmp_path, monkeypatch, mnist):
    fits = []

    def fit(images, labels, num_classes, level=False, epochs=None):
        fits.append((len(images), level))
        return _random_companion(np.random.default_rng(len(images))), {"digits": len(images)}

    monkeypatch.setattr(companion, "train_companion", fit)
    monkeypatch.setattr(verifiers, "cache_dir", lambda: tmp_path)
    (images, labels), _ = mnist
    first = companion.cached_companion(images[:50], labels[:50], 10)
    again = companion.cached_companion(images[:50], labels[:50], 10)
    assert fits == [(50, False)] and again[1] == {"digits": 50}
    for name, array in first[0].items():
        np.testing.assert_array_equal(again[0][name], array)
    companion.cached_companion(images[:40], labels[:40], 10)  # other digits: another fit
    companion.cached_companion(images[:50], labels[:50], 10, level=True)  # levelled too
    assert fits == [(50, False), (40, False), (50, True)]
    assert len(list((tmp_path / "companions").glob("*.npz"))) == 3


def test_calibration_gives_the_companion_its_share_and_the_verdict_reads_it(monkeypatch, mnist):
    """With enough training digits the run gets a companion: its threshold flags its
    `FLAG_RATES` share of the correct calibration digits, and an answer the companion
    doubts is "unsure"."""
    rng = np.random.default_rng(0)
    (x_train, y_train), (x_test, y_test) = mnist
    monkeypatch.setattr(companion, "MIN_DIGITS", 500)
    monkeypatch.setattr(verifiers, "MIN_DIGITS", 500)
    fake_verifier = {
        "verifier_kernel_0": rng.normal(0, 0.1, (1296, 8)).astype("f4"),
        "verifier_bias_0": np.zeros(8, "f4"),
        "verifier_kernel_1": rng.normal(0, 0.1, (8, 11)).astype("f4"),
        "verifier_bias_1": np.zeros(11, "f4"),
    }
    monkeypatch.setattr(
        verifiers, "cached_verifiers", lambda *a, **k: (fake_verifier, {"digits": 600})
    )
    doubting = _random_companion(rng)
    monkeypatch.setattr(companion, "cached_companion", lambda *a, **k: (doubting, {"digits": 600}))

    def network(images):  # right on every digit, sure of it
        return np.eye(10)[y_test[: len(images)]] * 0.9 + 0.01

    train, calibration = (x_train[:600], y_train[:600]), (x_test[:2000], y_test[:2000])
    thresholds, stats = confidence.calibrate(network, train, calibration, 10)
    assert {confidence.COMPANION, confidence.OTHER, confidence.DISAGREE} <= set(thresholds)
    assert set(doubting) <= set(stats)
    found = confidence.scores(stats, thresholds, x_test[:2000], network(x_test[:2000]))
    right = network(x_test[:2000]).argmax(axis=1) == y_test[:2000]
    flagged = found[confidence.COMPANION][right] > thresholds[confidence.COMPANION]
    share = confidence.FLAG_RATES[confidence.COMPANION]  # its share of the correct ones
    assert share - 2 / right.sum() <= flagged.mean() <= share + 1e-9
    assert thresholds["flagged_correct_calibration"] <= sum(confidence.FLAG_RATES.values())
    # an answer the companion gives no probability at all is unsure, whatever else says
    only = {key: np.zeros(1) for key in confidence.REASONS if key in thresholds}
    only[confidence.COMPANION] = np.ones(1)
    _, confident, reasons = confidence.judge(np.array([[0.99] + [0.01 / 9] * 9]), thresholds, only)
    assert confident.tolist() == [False] and reasons == ["unsure"]

    monkeypatch.setattr(companion, "MIN_DIGITS", 601)  # too few digits: no companion
    thresholds, stats = confidence.calibrate(network, train, calibration, 10)
    assert confidence.COMPANION not in thresholds and not set(doubting) & set(stats)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"companion_bias_2": None}, "incomplete"),
        ({"companion_bias_1": np.zeros(7, "f4")}, "fit together"),  # should be 8
        ({"companion_kernel_2": np.zeros((9, 10), "f4")}, "fit together"),  # takes 8
    ],
)
def test_companion_weights_that_dont_fit_are_a_one_line_refusal(tmp_path, change, message):
    stats = _random_companion(np.random.default_rng(1)) | change
    np.savez(tmp_path / STATS_FILE, **{k: v for k, v in stats.items() if v is not None})
    with pytest.raises(RunError, match="digitlab calibrate") as caught:
        read_confidence_stats(tmp_path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_train_says_before_the_minutes_calibration_may_take():
    assert confidence.calibration_notice("mnist", 999) is None  # no verifier: no wait
    assert confidence.calibration_notice("fashion-mnist", 60_000) is None
    few = confidence.calibration_notice("mnist", 5_000)
    verifiers_ = f"{verifiers.MEMBERS} verifiers"
    assert verifiers_ in few and "companion" not in few
    assert f"{verifiers_} and a companion" in confidence.calibration_notice("mnist", 54_000)


def test_calibrate_names_every_judge_the_run_has():
    base = {"calibration_digits": 5000, "flagged_correct_calibration": 0.014, "set_coverage": 0.95}
    alone = confidence.calibration_message("r", base)
    assert "the top-two margin flags 1.4%" in alone and "companion" not in alone
    every = confidence.calibration_message(
        "r", base | {confidence.OTHER: 0.5, confidence.COMPANION: 0.5}
    )
    assert "margin, the verifier networks (unsure, not a digit) and the companion" in every


def test_the_companion_also_learns_that_a_straight_mark_is_not_a_stroke():
    """The companion is its preset's network with one more degradation, straight marks on
    half the digits, after the preset's own and before Flatten; Keras builds it as such."""
    from digitlab.augment import RandomDegradation
    from digitlab.model import build_model
    from digitlab.presets import get_preset

    preset, spec = get_preset(companion.PRESET).layers, companion.companion_spec().layers
    at = [layer["type"] for layer in preset].index("Flatten")
    assert spec == (*preset[:at], companion.MARKS, *preset[at:])
    built = build_model(companion.companion_spec(), 10).layers
    marks = [x for x in built if isinstance(x, RandomDegradation) and x.kinds == ("strokes",)]
    assert [layer.probability for layer in marks] == [0.5]
