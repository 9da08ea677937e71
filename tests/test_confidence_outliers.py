"""What "not a digit" is learned from (issue 22): the generated non-digits and shifted
digits, and the verifier's features, weights and cache, checked against known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from digitlab import outliers, verifiers
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
        assert not np.array_equal(first[kind], other[kind]), kind  # another seed, others


def test_drawn_non_digits_are_framed_as_a_drawn_digit_is():
    """Strokes and blobs go through preprocessing's framing: ink within MNIST's 20-px box,
    its centre of mass at the frame's middle (±1 px)."""
    rng = np.random.default_rng(0)
    for images in (outliers.strokes(20, rng), outliers.glyphs(20, rng), outliers.blobs(20, rng)):
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
    assert np.array_equal(verifiers.centred(moved[whole]), verifiers.centred(images[:40][whole]))
    assert np.allclose(verifiers.features(moved[whole]), verifiers.features(images[:40][whole]))
    features = verifiers.features(images[:5])
    assert features.shape == (5, 6 * 6 * 4 * verifiers.BINS)
    assert not np.allclose(features[0], features[1])  # a 5 and a 0 read differently


def test_the_verifier_answers_one_more_class_than_the_run():
    rng = np.random.default_rng(0)
    size = verifiers.features(np.zeros((1, *outliers.FRAME), np.uint8)).shape[1]
    weights = {
        "verifier_kernel_0": rng.normal(size=(size, 8)).astype(np.float32),
        "verifier_bias_0": np.zeros(8, np.float32),
        "verifier_kernel_1": rng.normal(size=(8, 11)).astype(np.float32),
        "verifier_bias_1": np.zeros(11, np.float32),
    }
    images = rng.integers(0, 256, (4, *outliers.FRAME), dtype=np.uint8)
    probabilities = verifiers.verifier_probabilities(weights, images)
    assert probabilities.shape == (4, 11)
    assert np.allclose(probabilities.sum(axis=1), 1)


def _random_verifier(rng, size: int, hidden: int = 8, classes: int = 11):
    return {
        "verifier_kernel_0": rng.normal(size=(size, hidden)).astype(np.float32),
        "verifier_bias_0": rng.normal(size=hidden).astype(np.float32),
        "verifier_kernel_1": rng.normal(size=(hidden, classes)).astype(np.float32),
        "verifier_bias_1": rng.normal(size=classes).astype(np.float32),
    }


def test_stacked_verifiers_answer_with_their_average(tmp_path):
    rng = np.random.default_rng(1)
    size = verifiers.features(np.zeros((1, *outliers.FRAME), np.uint8)).shape[1]
    members = [_random_verifier(rng, size) for _ in range(3)]
    images = rng.integers(0, 256, (6, *outliers.FRAME), dtype=np.uint8)
    each = [verifiers.verifier_probabilities(member, images) for member in members]
    both = verifiers.stacked(members)
    assert both["verifier_kernel_0"].shape == (3, size, 8)
    together = verifiers.verifier_probabilities(both, images)
    np.testing.assert_allclose(together, np.mean(each, axis=0), rtol=1e-5)
    assert not np.allclose(together, each[0])  # all three count, not the first alone
    np.savez(tmp_path / STATS_FILE, **both)  # a run stores them so, and reads them back
    np.testing.assert_array_equal(
        read_confidence_stats(tmp_path)["verifier_bias_1"], both["verifier_bias_1"]
    )


@pytest.mark.parametrize(
    "change",
    [
        {"verifier_bias_0": np.zeros((3, 8), np.float32)},  # 3 members here, 2 elsewhere
        {"verifier_kernel_1": np.zeros((2, 2, 8, 11), np.float32)},  # stacked twice
    ],
)
def test_stacked_verifiers_that_dont_fit_together_are_refused(tmp_path, change):
    rng = np.random.default_rng(2)
    stats = verifiers.stacked([_random_verifier(rng, 1296) for _ in range(2)]) | change
    np.savez(tmp_path / STATS_FILE, **stats)
    with pytest.raises(RunError, match="digitlab calibrate"):
        read_confidence_stats(tmp_path)


def test_a_run_gets_its_verifiers_each_from_its_own_seed(monkeypatch, digits):
    asked = []

    def one(images, labels, num_classes, seed=0, level=False):
        asked.append((seed, level))
        return _random_verifier(np.random.default_rng(seed), 16), {"digits": 10, "glyphs": 5}

    monkeypatch.setattr(verifiers, "cached_verifier", one)
    weights, seen = verifiers.cached_verifiers(*digits, 10, level=True)
    assert asked == [(seed, True) for seed in range(verifiers.MEMBERS)]
    assert weights["verifier_kernel_1"].shape == (verifiers.MEMBERS, 8, 11)
    assert not np.array_equal(weights["verifier_kernel_0"][0], weights["verifier_kernel_0"][-1])
    assert seen == {"digits": 10 * verifiers.MEMBERS, "glyphs": 5 * verifiers.MEMBERS}


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


def test_the_verifier_is_fitted_once_per_set_of_digits_and_read_back_from_the_cache(
    tmp_path, monkeypatch, digits
):
    fits = []

    def fit(images, labels, num_classes, seed=0, level=False):  # weights only these give
        fits.append(len(images))
        rng = np.random.default_rng(int(images.sum()) + seed + level)
        hidden, out = verifiers.HIDDEN, num_classes + 1
        shapes = {"kernel_0": (8, hidden), "bias_0": (hidden,),
                  "kernel_1": (hidden, out), "bias_1": (out,)}  # fmt: skip
        return {f"verifier_{k}": rng.random(s, np.float32) for k, s in shapes.items()}, {
            "digits": len(images)
        }

    monkeypatch.setattr(verifiers, "train_verifier", fit)
    monkeypatch.setattr(verifiers, "cache_dir", lambda: tmp_path)
    images, labels = digits
    first = verifiers.cached_verifier(images[:50], labels[:50], 10)
    again = verifiers.cached_verifier(images[:50], labels[:50], 10)
    assert fits == [50]  # the second came from the cache, equal to the first
    assert again[1] == first[1] == {"digits": 50}
    for name, weights in first[0].items():
        np.testing.assert_array_equal(again[0][name], weights)
    verifiers.cached_verifier(images[:40], labels[:40], 10)  # other digits: another fit
    verifiers.cached_verifier(images[:50], labels[:50], 10, seed=1)  # another seed too
    verifiers.cached_verifier(images[:50], labels[:50], 10, level=True)  # levelled examples
    assert fits == [50, 40, 50, 50]
    key = verifiers._verifier_key(images[:50], labels[:50], 10, 0, False)
    stored = tmp_path / "verifiers" / f"{key}.npz"
    stored.write_bytes(b"not a zip")  # damaged: fitted again, and replaced
    verifiers.cached_verifier(images[:50], labels[:50], 10)
    assert fits == [50, 40, 50, 50, 50] and stored.read_bytes()[:2] == b"PK"
    assert not [p for p in (tmp_path / "verifiers").iterdir() if p.suffix != ".npz"]
