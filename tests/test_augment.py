"""RandomDistortion: identity when off or at inference, geometry of its maps, refusals, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from digitlab.augment import RandomDistortion
from digitlab.config import Spec
from digitlab.errors import SpecError
from digitlab.model import build_layer, build_model


def _digits(mnist, n=32) -> np.ndarray:
    (x, _), _ = mnist
    return (x[:n, ..., None] / 255.0).astype("float32")


def _centroids(images: np.ndarray) -> np.ndarray:
    """Each image's centre of mass, (row, col)."""
    rows, cols = np.mgrid[: images.shape[1], : images.shape[2]]
    mass = images[..., 0].sum(axis=(1, 2))
    return (
        np.stack([(images[..., 0] * rows).sum((1, 2)), (images[..., 0] * cols).sum((1, 2))], 1)
        / mass[:, None]
    )


def test_inference_and_zero_distortion_leave_digits_unchanged(mnist):
    digits = _digits(mnist)
    layer = RandomDistortion(rotation=15, shift=2, elastic_alpha=34, seed=0)
    np.testing.assert_array_equal(np.asarray(layer(digits, training=False)), digits)
    still = RandomDistortion(seed=0)  # every distortion 0: the identity map, resampled
    np.testing.assert_allclose(np.asarray(still(digits, training=True)), digits, atol=1e-5)


def test_shifts_move_each_digit_by_at_most_the_limit_and_not_all_alike(mnist):
    digits = _digits(mnist)
    moved = np.asarray(RandomDistortion(shift=3, seed=1)(digits, training=True))
    offsets = _centroids(moved) - _centroids(digits)
    assert np.abs(offsets).max() <= 3.05  # bilinear resampling blurs the centroid a little
    assert np.abs(offsets).max() > 1.0  # they did move
    assert len(np.unique(np.round(offsets, 2), axis=0)) == len(digits)  # each its own shift
    # A shift keeps the ink (digits sit well inside the 28×28 frame).
    np.testing.assert_allclose(moved.sum((1, 2, 3)), digits.sum((1, 2, 3)), rtol=0.05)


def test_rotation_turns_a_bar_about_the_centre():
    bar = np.zeros((1, 28, 28, 1), "float32")
    bar[0, 13:15, 4:24] = 1.0  # a horizontal bar through the centre
    layer = RandomDistortion(rotation=45, seed=3)
    turned = np.asarray(layer(np.repeat(bar, 16, axis=0), training=True))
    np.testing.assert_allclose(_centroids(turned), 13.5, atol=0.3)  # about the centre
    rows_spread = [np.ptp(np.nonzero(t[..., 0] > 0.5)[0]) for t in turned]
    assert max(rows_spread) > 6  # some bars now slope: they span many rows, not 2


def test_elastic_field_is_smooth_and_moves_x_and_y_independently():
    layer = RandomDistortion(elastic_alpha=34, elastic_sigma=4, seed=2)
    rows, cols = (np.asarray(c) for c in layer._source_coordinates(64, 28, 28))
    grid_rows, grid_cols = np.mgrid[:28, :28]
    d_row, d_col = rows - grid_rows, cols - grid_cols
    assert 0.3 < d_row.std() < 5 and 0.3 < d_col.std() < 5  # pixels move, by a few pixels
    # Keras's RandomElasticTransform moves x and y alike; these two fields are independent.
    assert abs(np.corrcoef(d_row.ravel(), d_col.ravel())[0, 1]) < 0.2
    # Smooth: neighbouring pixels move almost alike.
    assert np.abs(np.diff(d_row, axis=2)).mean() < 0.2 * np.abs(d_row).mean()


def test_bad_settings_and_flat_input_get_one_clear_message():
    with pytest.raises(SpecError, match="rotation must be between 0 and 90"):
        build_layer({"type": "RandomDistortion", "rotation": -5}, 0)
    with pytest.raises(SpecError, match="unknown argument 'elastic'"):
        build_layer({"type": "RandomDistortion", "elastic": 3}, 0)
    layers = ({"type": "RandomDistortion", "shift": 2}, {"type": "Dense", "units": 10})
    with pytest.raises(SpecError, match='RandomDistortion needs images.*input = "image"'):
        build_model(Spec(name="flat", layers=layers))


def test_a_model_with_the_layer_saves_and_loads(tmp_path):
    layers = (
        {"type": "RandomDistortion", "rotation": 10, "elastic_alpha": 20, "seed": 4},
        {"type": "Flatten"},
        {"type": "Dense", "units": 10},
    )
    model = build_model(Spec(name="aug", input="image", layers=layers))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    layer = loaded.layers[0]
    assert isinstance(layer, RandomDistortion)
    assert (layer.rotation, layer.elastic_alpha, layer.seed) == (10, 20, 4)
    x = np.random.default_rng(0).random((3, 28, 28, 1), dtype="float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_fastfit_training_draws_distortions_and_evaluation_does_not(mnist):
    from digitlab import fastfit
    from digitlab.model import compile_model

    layers = (
        {"type": "RandomDistortion", "shift": 2, "seed": 5},
        {"type": "Flatten"},
        {"type": "Dense", "units": 10},
    )
    spec = Spec(name="aug", input="image", layers=layers)
    model = build_model(spec)
    compile_model(model, spec)
    generator = model.layers[0].seed_generator
    (x, y), _ = mnist
    x = x[:256, ..., None]
    start = np.asarray(generator.state.value).copy()
    model.evaluate(x / 255.0, y[:256], verbose=0)
    np.testing.assert_array_equal(np.asarray(generator.state.value), start)  # no draws
    fastfit.fit(model, x, y[:256], batch_size=64, epochs=1, verbose=0, input_scale=1 / 255)
    assert not np.array_equal(np.asarray(generator.state.value), start)  # drawn in training


@pytest.mark.parametrize(
    "layer",
    [
        {"type": "RandomRotation", "factor": 0.05, "fill_mode": "constant"},
        {
            "type": "RandomTranslation",
            "height_factor": 0.1,
            "width_factor": 0.1,
            "fill_mode": "constant",
        },
        {"type": "RandomZoom", "height_factor": 0.1, "fill_mode": "constant"},
    ],
)
def test_keras_random_layers_train_in_the_compiled_loop(mnist, layer, tmp_path):
    import digitlab
    from digitlab.config import TrainConfig

    layers = (layer, {"type": "Flatten"}, {"type": "Dense", "units": 10, "activation": "softmax"})
    spec = Spec(name="k", input="image", layers=layers,
                train=TrainConfig(batch_size=64, epochs=2, train_samples=1024))  # fmt: skip
    run = digitlab.train(spec, runs_dir=tmp_path, verbose=0)
    assert run.status == "complete"
    assert run.metrics.test_accuracy > 0.4  # it learns (chance: 0.1), on 1,024 digits
