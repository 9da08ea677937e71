"""What "not a digit" is learned from (issue 22): the generated non-digits and shifted
digits, and the verifier's features, checked against known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from digitlab import outliers
from digitlab.errors import RunError
from digitlab.runs.folder import STATS_FILE, read_confidence_stats


@pytest.fixture(scope="module")
def digits(mnist):
    (x_train, y_train), _ = mnist
    return x_train[:600], y_train[:600]


def test_every_kind_of_non_digit_is_made_the_same_way_from_the_same_seed(digits):
    first = outliers.not_digits(200, *digits, seed=3)
    again = outliers.not_digits(200, *digits, seed=3)
    other = outliers.not_digits(200, *digits, seed=4)
    assert list(first) == list(outliers.KINDS)
    for kind in outliers.KINDS:
        assert first[kind].dtype == np.uint8 and first[kind].shape[1:] == outliers.FRAME
        assert len(first[kind]) >= 1 and first[kind].any(), kind
        assert np.array_equal(first[kind], again[kind]), kind
    assert not np.array_equal(first["strokes"], other["strokes"])


def test_drawn_non_digits_are_framed_as_a_drawn_digit_is():
    """Strokes and blobs go through preprocessing's framing: ink within MNIST's 20-px box,
    its centre of mass at the frame's middle (±1 px)."""
    rng = np.random.default_rng(0)
    for images in (outliers.strokes(20, rng), outliers.blobs(20, rng)):
        for image in images:
            rows, cols = np.nonzero(image)
            assert max(np.ptp(rows), np.ptp(cols)) + 1 <= 21
            centre = ndimage.center_of_mass(image.astype(float))
            assert np.allclose(centre, (14, 14), atol=1.0)


def test_turned_digits_are_only_of_classes_that_turning_makes_no_digit(digits):
    images, labels = digits
    turned = outliers.turned(images, labels, 30, np.random.default_rng(0))
    known = {
        image.tobytes(): label
        for image, label in zip(images, labels, strict=True)
        if label in outliers.ASYMMETRIC
    }
    for i, image in enumerate(turned):
        back = image[:, ::-1] if i % 3 == 0 else np.rot90(image, -1 if i % 3 == 1 else 1)
        assert back.tobytes() in known  # a mirrored or quarter-turned 2–7 or 9, never a 0/1/8


def test_shifted_digits_keep_their_ink_and_change_it(digits):
    images, _ = digits
    changed = outliers.shifted(images[:70], np.random.default_rng(0))
    assert changed.shape == (70, *outliers.FRAME) and changed.dtype == np.uint8
    for k, shift in enumerate(outliers.SHIFTS):  # one shift per image, in turn
        rows = slice(k, 70, len(outliers.SHIFTS))
        assert (changed[rows] > 64).sum(axis=(1, 2)).min() > 10, shift  # still a digit's ink
        assert not np.array_equal(changed[rows], images[:70][rows]), shift


def test_centring_undoes_a_shift_and_the_features_follow(digits):
    images, _ = digits
    moved = np.stack([ndimage.shift(image, (3, -2), order=0) for image in images[:40]])
    whole = moved.sum(axis=(1, 2)) == images[:40].sum(axis=(1, 2))  # no ink shifted out
    assert whole.sum() >= 20
    assert np.array_equal(outliers.centred(moved[whole]), outliers.centred(images[:40][whole]))
    assert np.allclose(outliers.features(moved[whole]), outliers.features(images[:40][whole]))
    features = outliers.features(images[:5])
    assert features.shape == (5, 6 * 6 * 4 * outliers.BINS)
    assert not np.allclose(features[0], features[1])  # a 5 and a 0 read differently


def test_the_verifier_answers_one_more_class_than_the_run():
    rng = np.random.default_rng(0)
    size = outliers.features(np.zeros((1, *outliers.FRAME), np.uint8)).shape[1]
    weights = {
        "verifier_kernel_0": rng.normal(size=(size, 8)).astype(np.float32),
        "verifier_bias_0": np.zeros(8, np.float32),
        "verifier_kernel_1": rng.normal(size=(8, 11)).astype(np.float32),
        "verifier_bias_1": np.zeros(11, np.float32),
    }
    images = rng.integers(0, 256, (4, *outliers.FRAME), dtype=np.uint8)
    probabilities = outliers.verifier_probabilities(weights, images)
    assert probabilities.shape == (4, 11)
    assert np.allclose(probabilities.sum(axis=1), 1)


def test_mismatched_verifier_weights_are_a_one_line_refusal(tmp_path):
    np.savez(
        tmp_path / STATS_FILE,
        verifier_kernel_0=np.zeros((1296, 8), np.float32),
        verifier_bias_0=np.zeros(7, np.float32),  # should be 8
        verifier_kernel_1=np.zeros((8, 11), np.float32),
        verifier_bias_1=np.zeros(11, np.float32),
    )
    with pytest.raises(RunError, match="digitlab calibrate") as caught:
        read_confidence_stats(tmp_path)
    assert "\n" not in str(caught.value)
