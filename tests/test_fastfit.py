"""The compiled training loop: Keras's semantics, one XLA program per epoch.

Each test trains the notebook's network on a few hundred to a few thousand real MNIST
digits, so the file runs in well under a minute.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from digitlab import fastfit
from digitlab.config import Spec, with_overrides
from digitlab.model import build_model, compile_model, prepare_inputs
from digitlab.presets import get_preset


@pytest.fixture(scope="module")
def digits(mnist):
    """3,000 training and 1,000 test digits, preprocessed as `train` does."""
    (x_train, y_train), (x_test, y_test) = mnist
    return (
        prepare_inputs(x_train[:3000]),
        y_train[:3000],
        prepare_inputs(x_test[:1000]),
        y_test[:1000],
    )


def _model(seed: int = 0, **overrides) -> keras.Model:
    spec = with_overrides(get_preset("seed"), seed=seed, **overrides)
    keras.utils.set_random_seed(seed)
    model = build_model(spec)
    compile_model(model, spec)
    return model


def _weights(model: keras.Model) -> list[np.ndarray]:
    return [np.array(w) for w in model.get_weights()]


class _Recorder(keras.callbacks.Callback):
    """Keeps every call's epoch and logs, and the weights at each epoch end."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, int, dict]] = []
        self.weights: list[list[np.ndarray]] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("begin", epoch, dict(logs or {})))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("end", epoch, dict(logs or {})))
        self.weights.append(_weights(self.model))


class _SampleCount(keras.metrics.Metric):
    """Counts the training samples the loop feeds through the metrics in an epoch."""

    def __init__(self, name="samples", **kwargs):
        super().__init__(name=name, **kwargs)
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.count.assign_add(keras.ops.cast(keras.ops.shape(y_true)[0], "float32"))

    def result(self):
        return self.count.value


def test_same_seed_gives_identical_weights_and_another_seed_does_not(digits):
    x, y, _, _ = digits
    runs = []
    for seed in (0, 0, 1):
        model = _model(seed)
        fastfit.fit(model, x[:1000], y[:1000], epochs=2, verbose=0, seed=seed)
        runs.append(_weights(model))
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1], strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0], runs[2], strict=True))


def test_accuracy_after_training_is_close_to_model_fit(digits):
    x, y, x_test, y_test = digits
    accuracy = {}
    for how in ("fit", "fastfit"):
        model = _model(0)
        if how == "fit":
            history = model.fit(x, y, batch_size=32, epochs=2, verbose=0).history
        else:
            history = fastfit.fit(model, x, y, batch_size=32, epochs=2, verbose=0)
        assert history["loss"][1] < history["loss"][0]
        accuracy[how] = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    assert accuracy["fastfit"] > 0.75
    assert abs(accuracy["fastfit"] - accuracy["fit"]) < 0.03


def test_partial_last_batch_is_trained_on():
    # 1,000 samples at batch 300: three full batches and one of 100, every sample seen.
    rng = np.random.default_rng(0)
    x, y = rng.random((1000, 784), dtype=np.float32), rng.integers(0, 10, 1000)
    model = _model(0)
    model.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", metrics=[_SampleCount()]
    )
    history = fastfit.fit(model, x, y, batch_size=300, epochs=2, verbose=0)
    assert history["samples"] == [1000.0, 1000.0]
    assert int(model.optimizer.iterations) == 8


def test_dropout_draws_fresh_randomness_every_step(digits):
    # Each Dropout layer's seed generator advances once per step, as under `model.fit`.
    x, y, _, _ = digits
    model = _model(0)
    before = [np.array(v) for v in model.non_trainable_variables]
    fastfit.fit(model, x[:640], y[:640], batch_size=32, epochs=1, verbose=0)
    after = [np.array(v) for v in model.non_trainable_variables]
    assert len(before) == 2  # the two Dropout layers' generator states
    for start, end in zip(before, after, strict=True):
        assert (end - start).tolist() == [0, 20]


def test_validation_split_holds_out_the_end_and_logs_val_metrics(digits):
    x, y, _, _ = digits
    model = _model(0)
    history = fastfit.fit(model, x[:1000], y[:1000], epochs=2, validation_split=0.2, verbose=0)
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(values) == 2 for values in history.values())
    held_out = model.evaluate(x[800:1000], y[800:1000], verbose=0, return_dict=True)
    assert history["val_loss"][-1] == pytest.approx(held_out["loss"], rel=1e-4)
    assert history["val_accuracy"][-1] == pytest.approx(held_out["accuracy"])


def test_callbacks_get_keras_shaped_logs_for_each_epoch(digits):
    x, y, _, _ = digits
    model = _model(0, metrics=("accuracy", "precision", "recall"))
    recorder = _Recorder()
    history = fastfit.fit(
        model, x[:500], y[:500], epochs=3, initial_epoch=1, callbacks=[recorder], verbose=0
    )
    assert [(kind, epoch) for kind, epoch, _ in recorder.calls] == [
        ("begin", 1),
        ("end", 1),
        ("begin", 2),
        ("end", 2),
    ]
    logs = recorder.calls[-1][2]
    assert set(logs) == {"loss", "accuracy", "precision", "recall"}
    assert all(isinstance(value, float) for value in logs.values())
    assert history["loss"] == [logs["loss"] for kind, _, logs in recorder.calls if kind == "end"]


def test_early_stopping_stops_and_restores_the_best_weights(digits):
    x, y, _, _ = digits
    model = _model(0)
    recorder = _Recorder()
    # No later epoch can beat the first by 10: stop after the second, keep the first's weights.
    stop = keras.callbacks.EarlyStopping(
        monitor="loss", min_delta=10.0, patience=1, restore_best_weights=True
    )
    history = fastfit.fit(model, x[:500], y[:500], epochs=10, callbacks=[recorder, stop], verbose=0)
    assert len(history["loss"]) == 2
    assert all(
        np.array_equal(a, b) for a, b in zip(_weights(model), recorder.weights[0], strict=True)
    )


def test_ctrl_c_leaves_the_weights_learned_so_far_in_the_model(digits):
    x, y, _, _ = digits

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    model = _model(0)
    initial = _weights(model)
    with pytest.raises(KeyboardInterrupt):
        fastfit.fit(model, x, y, epochs=5, callbacks=[Interrupt()], verbose=0)
    steps = int(model.optimizer.iterations)
    assert 0 < steps < len(x) // 32
    assert not any(np.array_equal(a, b) for a, b in zip(_weights(model), initial, strict=True))


def test_trained_model_saves_reloads_and_predicts_identically(digits, tmp_path):
    x, y, x_test, _ = digits
    model = _model(0, metrics=("accuracy", "precision"))
    fastfit.fit(model, x[:1000], y[:1000], epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(
        model.predict(x_test, verbose=0), loaded.predict(x_test, verbose=0)
    )
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 32


def test_one_hot_loss_trains(digits):
    x, y, x_test, y_test = digits
    model = _model(0, loss="categorical_crossentropy")
    one_hot = np.eye(10, dtype=np.float32)
    history = fastfit.fit(model, x, one_hot[y], epochs=2, verbose=0)
    assert history["loss"][1] < history["loss"][0]
    assert model.evaluate(x_test, one_hot[y_test], verbose=0, return_dict=True)["accuracy"] > 0.8


def test_progress_is_one_keras_line_per_epoch(digits, capsys):
    x, y, _, _ = digits
    fastfit.fit(_model(0), x[:320], y[:320], epochs=2, verbose=2)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Epoch 1/2" and lines[2] == "Epoch 2/2"
    assert (
        lines[1].startswith("10/10 - ") and " - accuracy: " in lines[1] and " - loss: " in lines[1]
    )


def test_chunking_the_epoch_does_not_change_the_result(digits, monkeypatch):
    # A live progress bar runs an epoch in many small programs; the weights must not care.
    x, y, _, _ = digits
    results = []
    for first_chunk in (1000, 3):
        monkeypatch.setattr(fastfit, "FIRST_CHUNK_STEPS", first_chunk)
        monkeypatch.setattr(fastfit, "CHUNK_SECONDS", 1e-4)
        model = _model(0)
        fastfit.fit(model, x[:1000], y[:1000], epochs=2, verbose=0)
        results.append(_weights(model))
    assert all(np.array_equal(a, b) for a, b in zip(*results, strict=True))


def test_predictor_matches_model_predict(digits):
    x, y, x_test, _ = digits
    model = _model(0)
    fastfit.fit(model, x[:500], y[:500], epochs=1, verbose=0)
    predict = fastfit.predictor(model, max_batch_size=256)
    expected = model.predict(x_test, verbose=0)
    for rows in (slice(0, 1), slice(0, 3), slice(0, 1000)):
        np.testing.assert_allclose(predict(x_test[rows]), expected[rows], rtol=1e-5, atol=1e-6)


def test_uint8_pixels_scaled_in_the_step_train_exactly_like_prepared_floats(mnist):
    (x_train, y_train), _ = mnist
    pixels, y = x_train[:1000].reshape(-1, 784), y_train[:1000]
    results = []
    for x, scale in ((prepare_inputs(pixels), None), (pixels, 1 / 255)):
        model = _model(0)
        fastfit.fit(model, x, y, epochs=1, validation_split=0.1, input_scale=scale, verbose=0)
        results.append(_weights(model))
    assert all(np.array_equal(a, b) for a, b in zip(*results, strict=True))


def _conv_model(seed: int = 0) -> keras.Model:
    spec = Spec(
        name="conv",
        input="image",
        layers=(
            {"type": "Conv2D", "filters": 4, "kernel_size": 3, "use_bias": False},
            {"type": "BatchNormalization"},
            {"type": "Activation", "activation": "relu"},
            {"type": "AveragePooling2D", "pool_size": 2},
            {"type": "Dropout", "rate": 0.2},
            {"type": "Flatten"},
            {"type": "Dense", "units": 10},
        ),
    )
    keras.utils.set_random_seed(seed)
    model = build_model(spec)
    compile_model(model, spec)
    model.compile(  # + the sample counter, to see every sample trained on exactly once
        optimizer=model.optimizer, loss=model.loss, metrics=["accuracy", _SampleCount()]
    )
    return model


def test_convolutional_nets_train_in_unrolled_programs_not_in_a_loop_or_fit(mnist, monkeypatch):
    """XLA runs a convolution in a while loop 20-30× slower on the CPU: a conv net's steps are
    unrolled, UNROLLED_STEPS to a program, and the leftover steps one to a program."""
    import jax

    (x_train, y_train), (x_test, y_test) = mnist
    model = _conv_model()
    monkeypatch.setattr(model, "fit", lambda *a, **k: pytest.fail("fell back to model.fit"))
    monkeypatch.setattr(jax.lax, "fori_loop", lambda *a: pytest.fail("a while loop"))
    # 1,000 digits at batch 32: 31 full steps (3 programs of 8, 7 of one) and a partial one.
    x = x_train[:1000, :, :, None]
    history = fastfit.fit(
        model, x, y_train[:1000], epochs=3, verbose=0, input_scale=1 / 255, validation_split=0.1
    )
    assert history["samples"] == [900.0] * 3  # every sample once an epoch, none twice
    assert history["loss"][2] < history["loss"][0]
    assert history["val_accuracy"][2] > 0.6
    predicted = model.predict(x_test[:500, :, :, None] / 255, verbose=0).argmax(axis=1)
    assert (predicted == y_test[:500]).mean() > 0.6


def test_unrolled_steps_train_like_the_loop_and_like_any_chunking(mnist, monkeypatch):
    (x_train, y_train), _ = mnist
    x, y = x_train[:600, :, :, None], y_train[:600]
    results = []
    for has_convolutions, unrolled_steps in ((True, 8), (True, 5), (False, 8)):
        monkeypatch.setattr(fastfit, "UNROLLED_STEPS", unrolled_steps)
        monkeypatch.setattr(fastfit, "_has_convolutions", lambda model, c=has_convolutions: c)
        model = _conv_model()
        fastfit.fit(model, x, y, epochs=2, verbose=0, input_scale=1 / 255, validation_split=0.2)
        results.append(_weights(model))
    for other in results[1:]:  # the same steps in the same order: float rounding apart
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_weight_averaging_leaves_the_moving_average_in_the_model(digits):
    x, y, x_test, y_test = digits
    plain, averaged = _model(0), _model(0, ema_momentum=0.9)
    assert averaged.optimizer.use_ema and averaged.optimizer.ema_momentum == 0.9
    for model in (plain, averaged):
        fastfit.fit(model, x[:1000], y[:1000], epochs=2, verbose=0)
    averages = [np.array(v) for v in averaged.optimizer._model_variables_moving_average]
    weights = [np.array(v) for v in averaged.trainable_variables]
    for average, weight in zip(averages, weights, strict=True):
        np.testing.assert_array_equal(weight, average)  # the average, swapped in at the end
    # Same seed, same steps: only the averaging makes the weights differ.
    assert not np.array_equal(_weights(plain)[0], _weights(averaged)[0])
    # An average of the last ~10 steps' weights (momentum 0.9): far better than chance.
    assert averaged.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"] > 0.5
