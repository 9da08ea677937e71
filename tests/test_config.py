"""Spec resolution and validation: preset < TOML file < flags; unknown names are refused."""

from __future__ import annotations

import pytest

from digitlab.config import Spec, TrainConfig, load_spec_file, resolve_spec, with_overrides
from digitlab.errors import SpecError
from digitlab.presets import get_preset, preset_names
from digitlab.schema import validate


def test_seed_preset_is_the_notebooks_network():
    spec = get_preset("seed")
    assert [
        (layer["type"], layer.get("units"), layer.get("activation"), layer.get("rate"))
        for layer in spec.layers
    ] == [
        ("Dense", 100, "sigmoid", None),
        ("Dense", 100, "relu", None),
        ("Dropout", None, None, 0.2),
        ("Dense", 100, "relu", None),
        ("Dropout", None, None, 0.2),
        ("Dense", 10, "sigmoid", None),
    ]
    assert spec.input_shape == (784,)
    train = spec.train
    assert (train.optimizer, train.loss, train.metrics) == (
        "adam",
        "sparse_categorical_crossentropy",
        ("accuracy",),
    )
    assert (train.batch_size, train.epochs) == (32, 10)


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(SpecError, match="valid presets: seed"):
        get_preset("nope")
    assert "seed" in preset_names()


def test_spec_round_trips_through_dict():
    spec = with_overrides(get_preset("seed"), epochs=3, metrics=["accuracy", "recall"])
    assert Spec.model_validate(spec.to_dict()) == spec


def test_flags_override_file_which_overrides_preset(tmp_path):
    path = tmp_path / "wide.toml"
    path.write_text(
        """
name = "wide"
[train]
epochs = 4
batch_size = 64

[[layers]]
type = "Dense"
units = 256
activation = "relu"
kernel_regularizer = {class_name = "L2", config = {l2 = 0.0001}}

[[layers]]
type = "Dense"
units = 10
activation = "softmax"
"""
    )
    spec = load_spec_file(path, base=get_preset("seed"))
    assert spec.name == "wide"
    assert len(spec.layers) == 2 and spec.layers[0]["units"] == 256
    assert (spec.train.epochs, spec.train.batch_size, spec.train.optimizer) == (4, 64, "adam")
    spec = with_overrides(spec, epochs=7, batch_size=None)
    assert (spec.train.epochs, spec.train.batch_size) == (7, 64)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epochz = 3", "unknown key 'epochz'"),
        ("[train]\nepochz = 3", "unknown key 'epochz' in \\[train\\].*did you mean 'epochs'"),
        ("layers = 3", "must be \\[\\[layers\\]\\] tables"),
        ("[train]\nepochs = 'ten'", "'train.epochs' must be a whole number, got 'ten'"),
        ("[train]\nepochs = 2.5", "'train.epochs' must be a whole number, got 2.5"),
        ("[train]\nbatch_size = '32'", "'train.batch_size' must be a whole number"),
        ("[train]\nlearning_rate = '0.001'", "'train.learning_rate' must be a number"),
        ("[train]\nvalidation_split = '0.1'", "'train.validation_split' must be a number"),
        ("[train]\noptimizer = 3", "unknown optimizer '3'"),
        ("[train]\nseed = 'x'", "'train.seed' must be a whole number"),
        ("[train]\nmetrics = 'accuracy'", "'train.metrics' must be a list"),
        ("input = 'imgae'", "unknown input 'imgae' \\(did you mean 'image'\\?\\)"),
        ("[[layers]]\ntype = 'Dense'\nunits = 100000000", "'units' must be a whole number from 1"),
        ("train = 3", "'train' must be a table"),
        ("[[layers]\n", "not valid TOML"),
    ],
)
def test_bad_spec_files_are_refused_in_one_line(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpecError, match=message) as info:
        load_spec_file(path, base=get_preset("seed"))
    assert "\n" not in str(info.value)


def test_missing_spec_file_is_named(tmp_path):
    with pytest.raises(SpecError, match=r"missing\.toml not found"):
        load_spec_file(tmp_path / "missing.toml", base=get_preset("seed"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"loss": "crossentropy"}, "unknown loss 'crossentropy'.*valid losses: sparse_categorical"),
        ({"loss": "binary_crossentropy"}, "two classes"),
        ({"optimizer": "adamm"}, "did you mean 'adam'.*valid optimizers: adam, sgd"),
        ({"metrics": ("accuracy", "f1")}, "unknown metric 'f1'.*valid metrics: accuracy"),
        ({"learning_rate": 0.0}, "'learning_rate' must be greater than 0"),
        ({"learning_rate": float("inf")}, "'learning_rate' must be a finite number"),
        ({"learning_rate": float("nan")}, "'learning_rate' must be a finite number"),
        ({"batch_size": 0}, "'batch_size' must be at least 1"),
        ({"validation_split": 1.0}, "'validation_split' must be less than 1"),
        ({"early_stopping": 2}, "add --validation-split"),
        ({"seed": -1}, "'seed' must be at least 0"),
        ({"seed": 2**70}, "'seed' must be less than 4294967296"),
        ({"epochs": True}, "'epochs' must be a whole number"),
        ({"ema_momentum": 1.0}, "'ema_momentum' must be less than 1"),
        ({"ema_momentum": 0.0}, "'ema_momentum' must be greater than 0"),
    ],
)
def test_bad_training_choices_are_refused(change, message):
    with pytest.raises(SpecError, match=message) as info:
        validate(TrainConfig, change, "options")
    assert str(info.value).startswith("options: ")


def test_loss_aliases_are_normalised_and_decide_one_hot():
    assert TrainConfig(loss="mse").loss == "mean_squared_error"
    assert TrainConfig(loss="mean_squared_error").one_hot
    assert TrainConfig(loss="categorical_crossentropy").one_hot
    assert not TrainConfig().one_hot


def test_override_of_unknown_field_is_refused():
    with pytest.raises(SpecError, match="unknown training option 'epoch'.*did you mean 'epochs'"):
        with_overrides(get_preset("seed"), epoch=3)


def test_precedence_preset_then_file_then_overrides_lives_in_the_library(tmp_path):
    path = tmp_path / "short.toml"
    path.write_text("[train]\nepochs = 4\nbatch_size = 64\n")
    spec = resolve_spec("mlp", path, epochs=2)
    assert spec.layers == get_preset("mlp").layers  # from the preset
    assert spec.train.batch_size == 64  # from the file
    assert spec.train.epochs == 2  # from the override, which wins over the file
    assert resolve_spec().name == "seed"


@pytest.mark.parametrize("make", ["folder", "fifo", "devzero"])
def test_spec_path_that_is_not_a_regular_file_is_refused(tmp_path, make):
    import os

    path = tmp_path / "spec.toml"
    if make == "folder":
        path.mkdir()
    elif make == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    with pytest.raises(SpecError, match="spec.toml is (a folder|not a regular file)"):
        load_spec_file(path, base=get_preset("seed"))
