"""Presets: each one builds and trains; the learning rate schedule spans exactly the fit.

Final accuracy is the benchmark's business, not the tests': here each preset trains one short
epoch on a few real digits, which catches a layer that doesn't fit or a schedule that breaks.
"""

from __future__ import annotations

import keras
import pytest

import digitlab
from digitlab.config import Spec, TrainConfig, with_overrides
from digitlab.errors import SpecError
from digitlab.model import build_model, compile_model
from digitlab.presets import get_preset, preset_names
from digitlab.schema import validate


def _schedule_config(model) -> dict | float:
    """The optimizer's learning rate as Keras serialises it: a number or a schedule's dict."""
    return model.optimizer.get_config()["learning_rate"]


@pytest.mark.slow
@pytest.mark.parametrize("name", preset_names())
def test_every_preset_trains_one_short_epoch_on_real_digits(name, tmp_path):
    spec = with_overrides(get_preset(name), train_samples=512, epochs=1)
    run = digitlab.train(spec, runs_dir=tmp_path, verbose=0)
    assert run.status == "complete"
    assert run.epochs_done == 1
    assert 0.0 <= run.metrics.test_accuracy <= 1.0
    assert run.model.count_params() == build_model(spec).count_params()
    learning_rate = _schedule_config(run.model)  # as saved and loaded back
    if spec.train.learning_rate_schedule == "cosine":
        assert learning_rate["class_name"] == "CosineDecay"
        assert learning_rate["config"]["decay_steps"] == 512 // spec.train.batch_size


def test_the_accuracy_presets_are_what_their_descriptions_say():
    assert {"seed", "fast", "mlp", "mlp-aug", "cnn"} <= set(preset_names())
    for name in preset_names():
        description = get_preset(name).description
        assert description and "\n" not in description, name
    assert get_preset("mlp").input == "flat"
    assert get_preset("cnn").input == "image"
    assert "Conv2D" in {layer["type"] for layer in get_preset("cnn").layers}
    # The augmented presets distort their training digits, first thing, and only them.
    for name in ("mlp-aug", "cnn"):
        assert get_preset(name).layers[0]["type"] == "RandomDistortion", name
    assert get_preset("mlp-aug").layers[0]["elastic_alpha"] > 0
    assert "Conv2D" not in {layer["type"] for layer in get_preset("mlp-aug").layers}
    assert not any(layer["type"] == "RandomDistortion" for layer in get_preset("mlp").layers)
    # The convnets pool by averaging: max pooling's gradient costs more than a convolution on
    # XLA's CPU backend (benchmarks/RESULTS.md, "Convolutions in a compiled loop").
    for name in ("fast", "cnn"):
        types = [layer["type"] for layer in get_preset(name).layers]
        assert "Conv2D" in types and "MaxPooling2D" not in types, name
        assert types.count("AveragePooling2D") == 2, name
    assert get_preset("fast").train.epochs < get_preset("cnn").train.epochs
    # cnn-robust is the cnn with half its (distorted) training digits degraded, and only that.
    robust, cnn = get_preset("cnn-robust"), get_preset("cnn")
    assert robust.layers[1] == {"type": "RandomDegradation", "probability": 0.5}
    assert (robust.layers[:1] + robust.layers[2:], robust.train) == (cnn.layers, cnn.train)
    # mlp-robust degrades the same way, behind the same distortions, then reads the pixels
    # with an MLP: no convolution, so its NumPy forward pass is two matrix products.
    mlp = get_preset("mlp-robust")
    assert mlp.layers[:2] == robust.layers[:2]
    assert not {"Conv2D", "BatchNormalization"} & {layer["type"] for layer in mlp.layers}


def _spec(**train) -> Spec:
    layers = ({"type": "Dense", "units": 10},)
    return Spec(name="t", layers=layers, train=TrainConfig(**train))


def test_cosine_schedule_counts_every_step_of_the_fit():
    # 1,000 samples less a 0.2 validation split leave 800: 8 steps of 100, for 3 epochs.
    spec = _spec(
        learning_rate=0.01,
        learning_rate_schedule="cosine",
        batch_size=100,
        epochs=3,
        validation_split=0.2,
    )
    model = build_model(spec)
    compile_model(model, spec, train_samples=1000)
    config = _schedule_config(model)["config"]
    assert config["decay_steps"] == 24
    schedule = keras.optimizers.schedules.CosineDecay.from_config(config)
    assert float(schedule(0)) == pytest.approx(0.01)
    assert float(schedule(12)) == pytest.approx(0.005)  # half way: half the rate
    assert float(schedule(24)) == pytest.approx(0.0, abs=1e-9)


def test_cosine_schedule_counts_a_last_partial_batch_and_the_configured_subset():
    spec = _spec(learning_rate_schedule="cosine", batch_size=128, train_samples=300)
    model = build_model(spec)
    compile_model(model, spec)  # no count given: the spec's 300 samples, 3 steps an epoch
    config = _schedule_config(model)["config"]
    assert config["decay_steps"] == 3 * 10
    assert config["initial_learning_rate"] == pytest.approx(0.001)  # Adam's Keras default


def test_constant_schedule_keeps_the_learning_rate_fixed():
    spec = _spec(learning_rate=0.05)
    model = build_model(spec)
    compile_model(model, spec)
    assert _schedule_config(model) == pytest.approx(0.05)


def test_unknown_schedule_is_refused_with_the_valid_names():
    with pytest.raises(
        SpecError, match=r"did you mean 'cosine'.*valid schedules: constant, cosine"
    ):
        validate(TrainConfig, {"learning_rate_schedule": "cosin"}, "options")
    with pytest.raises(SpecError, match="unknown schedule 'step'"):
        with_overrides(get_preset("mlp"), learning_rate_schedule="step")
