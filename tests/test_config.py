"""Spec resolution and validation: preset < TOML file < flags; unknown names are refused."""

from __future__ import annotations

import dataclasses

import pytest

from digitlab.config import (
    Spec,
    TrainConfig,
    load_spec_file,
    spec_from_dict,
    validate_train_config,
    with_overrides,
)
from digitlab.errors import SpecError
from digitlab.presets import get_preset, preset_names


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
    assert spec_from_dict(spec.to_dict()) == spec


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
        ("[train]\nepochz = 3", "unknown key 'epochz' in training options.*did you mean 'epochs'"),
        ("layers = 3", "must be \\[\\[layers\\]\\] tables"),
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
        ({"learning_rate": 0.0}, "learning rate must be positive"),
        ({"batch_size": 0}, "batch size must be at least 1"),
        ({"validation_split": 1.0}, "validation split must be in"),
        ({"early_stopping": 2}, "add --validation-split"),
    ],
)
def test_bad_training_choices_are_refused(change, message):
    with pytest.raises(SpecError, match=message):
        validate_train_config(dataclasses.replace(TrainConfig(), **change))


def test_loss_aliases_are_normalised_and_decide_one_hot():
    assert validate_train_config(TrainConfig(loss="mse")).loss == "mean_squared_error"
    assert TrainConfig(loss="mean_squared_error").one_hot
    assert TrainConfig(loss="categorical_crossentropy").one_hot
    assert not TrainConfig().one_hot


def test_override_of_unknown_field_is_refused():
    with pytest.raises(SpecError, match="unknown key 'epoch'"):
        with_overrides(Spec(name="x", layers=()), epoch=3)
