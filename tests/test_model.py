"""From spec to Keras model: the notebook's network, refused mistakes, metrics against sklearn."""

from __future__ import annotations

import keras
import numpy as np
import pydantic
import pytest
from sklearn import metrics as skm

from digitlab.config import Spec, with_overrides
from digitlab.errors import SpecError
from digitlab.model import (
    MacroPrecision,
    MacroRecall,
    build_model,
    compile_model,
    prepare_inputs,
    to_probabilities,
)
from digitlab.presets import get_preset


def _spec(*layers, input="flat"):
    return Spec(name="t", layers=tuple(layers), input=input)


def test_seed_model_matches_the_notebook_summary():
    model = build_model(get_preset("seed"))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Dense", "Dense", "Dropout", "Dense", "Dropout", "Dense"]
    # 784*100+100 + 100*100+100 + 100*100+100 + 100*10+10, as the notebook's summary shows
    assert model.count_params() == 99_710
    assert model.output_shape == (None, 10)


def test_every_dense_argument_of_the_notebook_signature_is_accepted():
    dense = {
        "type": "Dense",
        "units": 10,
        "activation": "softmax",
        "use_bias": True,
        "kernel_initializer": "he_normal",
        "bias_initializer": "zeros",
        "kernel_regularizer": {"class_name": "L2", "config": {"l2": 1e-4}},
        "bias_regularizer": "l1",
        "activity_regularizer": "l2",
        "kernel_constraint": {"class_name": "MaxNorm", "config": {"max_value": 3}},
        "bias_constraint": "non_neg",
    }
    layer = build_model(_spec(dense)).layers[0]
    assert isinstance(layer.kernel_regularizer, keras.regularizers.L2)
    assert isinstance(layer.kernel_constraint, keras.constraints.MaxNorm)
    assert layer.kernel_constraint.max_value == 3


def test_convolutional_layers_build_on_image_input():
    spec = _spec(
        {"type": "Conv2D", "filters": 8, "kernel_size": 3, "activation": "relu"},
        {"type": "MaxPooling2D"},
        {"type": "BatchNormalization"},
        {"type": "Flatten"},
        {"type": "Dense", "units": 10, "activation": "softmax"},
        input="image",
    )
    assert build_model(spec).input_shape == (None, 28, 28, 1)


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            [{"type": "Dense", "units": 10, "activation": "sigmoyd"}],
            "unknown activation 'sigmoyd'.*did you mean 'sigmoid'.*valid activations:",
        ),
        ([{"type": "Dens", "units": 10}], "unknown layer type 'Dens'.*valid layer types: Dense"),
        ([{"type": "Dense", "unit": 10}], "unknown argument 'unit'.*did you mean 'units'"),
        ([{"type": "Dense", "units": 10, "kernel_initializer": "nope"}], "layer 1 \\(Dense\\)"),
        ([{"type": "Dense", "units": 12}], "output layer has 12 units but the data has 10"),
        (
            [{"type": "Dense", "units": 10}, {"type": "Dropout", "rate": 0.2}],
            "last layer must be Dense",
        ),
        ([], "has no layers"),
        (
            [{"type": "Conv2D", "filters": 4, "kernel_size": 3}, {"type": "Dense", "units": 10}],
            "don't fit together on flat input 784",
        ),
    ],
)
def test_bad_layers_are_refused_in_one_line(layers, message):
    with pytest.raises(SpecError, match=message) as info:
        build_model(_spec(*layers))
    assert "\n" not in str(info.value)


def test_linear_output_trains_from_logits():
    spec = _spec({"type": "Dense", "units": 10})
    model = build_model(spec)
    compile_model(model, spec)
    assert model.loss.get_config()["from_logits"] is True


def test_one_hot_losses_compile_and_fit():
    spec = with_overrides(get_preset("seed"), loss="mse", metrics=["accuracy", "precision"])
    model = build_model(spec)
    train = compile_model(model, spec)
    assert train.loss == "mean_squared_error" and train.one_hot
    x = np.random.default_rng(0).random((64, 784), dtype=np.float32)
    y = np.eye(10, dtype=np.float32)[np.arange(64) % 10]
    logs = model.fit(x, y, epochs=1, verbose=0).history
    assert set(logs) == {"loss", "accuracy", "precision"}


@pytest.mark.parametrize("one_hot", [False, True])
def test_precision_and_recall_match_sklearn_with_integer_or_one_hot_labels(one_hot):
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 500)
    scores = rng.random((500, 10)).astype(np.float32)
    scores[np.arange(500), labels] += rng.random(500) > 0.4  # mostly right, some wrong
    predicted = scores.argmax(axis=1)
    y_true = np.eye(10, dtype=np.float32)[labels] if one_hot else labels
    for metric, oracle in (
        (MacroPrecision(), skm.precision_score),
        (MacroRecall(), skm.recall_score),
    ):
        metric.update_state(y_true[:200], scores[:200])  # accumulates over batches
        metric.update_state(y_true[200:], scores[200:])
        expected = oracle(labels, predicted, average="macro", zero_division=0)
        assert float(metric.result()) == pytest.approx(expected, abs=1e-6)
    per_class = MacroRecall(class_id=3)
    per_class.update_state(labels, scores)
    assert float(per_class.result()) == pytest.approx(
        skm.recall_score(labels, predicted, average=None)[3], abs=1e-6
    )


def test_probabilities_sum_to_one_for_each_output_kind():
    sigmoid = np.array([[0.9, 0.3, 0.0], [0.2, 0.2, 0.6]])
    assert to_probabilities(sigmoid, "sigmoid") == pytest.approx(
        np.array([[0.75, 0.25, 0.0], [0.2, 0.2, 0.6]])
    )
    logits = np.array([[2.0, 0.0, -1.0]])
    softmax = np.exp(logits) / np.exp(logits).sum()
    assert to_probabilities(logits, "linear") == pytest.approx(softmax)
    assert to_probabilities(softmax, "softmax") == pytest.approx(softmax)


def test_prepare_inputs_flattens_and_scales_in_float32():
    images = np.zeros((2, 28, 28), np.uint8)
    images[0, 0, 0], images[1, 27, 27] = 255, 51
    flat = prepare_inputs(images)
    assert flat.shape == (2, 784) and flat.dtype == np.float32
    assert flat[0, 0] == 1.0 and flat[1, 783] == pytest.approx(0.2)
    assert prepare_inputs(images, "image").shape == (2, 28, 28, 1)


def test_spec_is_frozen():
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        get_preset("seed").name = "x"
