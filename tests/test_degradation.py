"""RandomDegradation: identity at inference, what each kind does to a digit, its share, refusals."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from scipy import ndimage, stats

from digitlab.augment import RandomDegradation
from digitlab.choices import DEGRADATIONS
from digitlab.config import Spec
from digitlab.errors import SpecError
from digitlab.model import build_layer, build_model


def _digits(mnist, n=64) -> np.ndarray:
    (x, _), _ = mnist
    return (x[:n, ..., None] / 255.0).astype("float32")


def _degrade(images, kind, seed=0) -> np.ndarray:
    out = np.asarray(RandomDegradation(1.0, [kind], seed=seed)(images, training=True))
    assert out.shape == images.shape and out.dtype == images.dtype
    assert out.min() >= 0 and out.max() <= 1, kind  # still pixels
    return out


def test_inference_and_probability_zero_leave_digits_unchanged(mnist):
    digits = _digits(mnist)
    np.testing.assert_array_equal(np.asarray(RandomDegradation(seed=0)(digits)), digits)
    off = RandomDegradation(0.0, seed=0)
    np.testing.assert_array_equal(np.asarray(off(digits, training=True)), digits)


def test_probability_is_the_share_of_images_changed(mnist):
    digits = _digits(mnist, 400)
    out = np.asarray(RandomDegradation(0.3, ["thicken"], seed=1)(digits, training=True))
    changed = int((np.abs(out - digits).max(axis=(1, 2, 3)) > 0).sum())
    # Every digit's dilation changes it, so the count changed is Binomial(400, 0.3).
    assert stats.binomtest(changed, 400, 0.3).pvalue > 1e-3, changed
    unchanged = np.abs(out - digits).max(axis=(1, 2, 3)) == 0
    np.testing.assert_array_equal(out[unchanged], digits[unchanged])  # the rest: untouched


def test_noise_and_specks_mark_the_background(mnist):
    digits = _digits(mnist)
    background = digits == 0
    noisy = _degrade(digits, "noise")
    assert 0.03 < noisy[background].mean() < 0.3  # clipped N(0, 0.1–0.5): half are 0
    specks = _degrade(digits, "specks", seed=2)
    changed = specks != digits
    assert 0.01 < changed.mean() < 0.2  # 2–20% of pixels hit, some already black or white
    assert set(np.unique(specks[changed])) <= {0.0, 1.0}  # salt and pepper only


def test_stroke_width_kinds_grow_shrink_and_hollow_the_ink(mnist):
    digits = _digits(mnist)
    thick, thin = _degrade(digits, "thicken"), _degrade(digits, "thin")
    np.testing.assert_allclose(thick[..., 0], ndimage.grey_dilation(digits[..., 0], (1, 3, 3)))
    assert (thin <= digits).all() and thin.sum() < 0.8 * digits.sum()
    outline = _degrade(digits, "outline")
    assert (outline[digits == 1] == 0).all()  # a full-ink pixel is inside the stroke: hollow
    assert (outline[thick == 0] == 0).all()  # and nothing beyond one pixel out
    assert outline.sum() > 0.3 * digits.sum()


def test_blur_and_coarse_spread_the_ink_and_lose_detail(mnist):
    digits = _digits(mnist)
    for kind in ("blur", "coarse"):
        soft = _degrade(digits, kind)
        assert (soft > 0.05).sum() > (digits > 0.05).sum(), kind  # spread over more pixels
        detail = np.abs(np.diff(soft, axis=2)).sum()
        assert detail < 0.9 * np.abs(np.diff(digits, axis=2)).sum(), kind
    blurred = _degrade(digits, "blur")
    np.testing.assert_allclose(blurred.max(axis=(1, 2, 3)), 1.0, rtol=1e-5)  # stretched back


def test_strokes_add_ink_and_gaps_remove_a_rectangle(mnist):
    digits = _digits(mnist)
    marked = _degrade(digits, "strokes")
    assert (marked >= digits).all()
    added = ((marked - digits) > 0.5).sum(axis=(1, 2, 3))
    assert (added > 0).all() and added.max() < 3 * 2 * 40  # ≤ 3 marks, ~2 px wide, ≤ 40 long
    gapped = _degrade(digits, "gap")
    assert (gapped <= digits).all()
    for before, after in zip(digits[..., 0], gapped[..., 0], strict=True):
        rows, cols = np.nonzero(before != after)
        if len(rows):  # the wiped pixels fit a rectangle of at most 10 × 10
            assert np.ptp(rows) < 10 and np.ptp(cols) < 10
    assert (gapped != digits).any(axis=(1, 2, 3)).mean() > 0.5  # most gaps hit some ink


def test_every_kind_is_drawn_and_each_image_gets_one(mnist):
    digits = _digits(mnist, 256)
    mixed = np.asarray(RandomDegradation(1.0, seed=3)(digits, training=True))
    candidates = {kind: _degrade(digits, kind, seed=9) for kind in ("thicken", "thin", "outline")}
    # The deterministic kinds can be recognised exactly: each is drawn about 1/9 of the time.
    for kind, image in candidates.items():
        share = (np.abs(mixed - image).max(axis=(1, 2, 3)) < 1e-6).mean()
        assert 0.03 < share < 0.25, (kind, share)
    assert len(DEGRADATIONS) == 9


def test_bad_settings_and_flat_input_get_one_clear_message():
    with pytest.raises(SpecError, match="probability must be between 0 and 1"):
        build_layer({"type": "RandomDegradation", "probability": 1.5}, 0)
    with pytest.raises(SpecError, match="kinds must be some of noise, specks.*got \\['fog'\\]"):
        build_layer({"type": "RandomDegradation", "kinds": ["fog"]}, 0)
    assert build_layer({"type": "RandomDegradation", "kinds": "blur"}, 0).kinds == ("blur",)
    layers = ({"type": "RandomDegradation"}, {"type": "Dense", "units": 10})
    with pytest.raises(SpecError, match='RandomDegradation needs images.*input = "image"'):
        build_model(Spec(name="flat", layers=layers))


def test_a_model_with_the_layer_saves_and_loads(tmp_path):
    layers = (
        {"type": "RandomDegradation", "probability": 0.4, "kinds": ["blur", "gap"], "seed": 4},
        {"type": "Flatten"},
        {"type": "Dense", "units": 10},
    )
    model = build_model(Spec(name="deg", input="image", layers=layers))
    model.save(tmp_path / "m.keras")
    layer = keras.saving.load_model(tmp_path / "m.keras").layers[0]
    assert isinstance(layer, RandomDegradation)
    assert (layer.probability, layer.kinds, layer.seed) == (0.4, ("blur", "gap"), 4)
