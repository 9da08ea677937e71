"""Instant commands (issue 23): what `evaluate --json`, `summary` and `explain` compute without
Keras, JAX or scikit-learn, held to those libraries' own figures, their oracles.

Every preset's architecture is built with random weights (no training) where a network is
needed; the loss, the per-class report, the layer table and the saliency must equal what
Keras, scikit-learn and JAX give to 1e-5 (to the bit where the arithmetic is the same).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from runfiles import model_run

from digitlab.config import Spec
from digitlab.evaluation import (
    KERAS_EPSILON,
    confusion_matrix,
    evaluate_model,
    loss_targets,
    measure,
    numpy_loss,
    per_class_report,
)
from digitlab.forward import load_forward, prepare_inputs
from digitlab.presets import get_preset, preset_names
from digitlab.schema import TrainConfig


def _randomized(model, seed: int = 0):
    """Random biases and batch-norm statistics on top of Keras's random kernels: zeros and
    ones would hide a computation that forgets them."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        if "float" not in str(variable.dtype) or len(shape) != 1:
            continue
        low, high = (0.5, 2.0) if variable.path.endswith("variance") else (-0.5, 0.5)
        variable.assign(rng.uniform(low, high, shape).astype(np.float32))
    return model


def _images(n: int = 64, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def _saved(spec: Spec, tmp_path):
    """A compiled, randomized Keras model of `spec`, and its NumPy forward pass (from the
    model.keras it was saved to; None where forward.py doesn't run it)."""
    from digitlab.model import build_model, compile_model

    model = _randomized(build_model(spec))
    compile_model(model, spec)
    path = tmp_path / f"{spec.name}.keras"
    model.save(path)
    return model, load_forward(path)


# ------------------------------------------------------------------------------ evaluate --json
def _keras_loss(model, spec: Spec, images: np.ndarray, labels: np.ndarray) -> float:
    x = prepare_inputs(images, spec.input_shape)
    targets = loss_targets(labels, spec, 10)
    return model.evaluate(x, targets, batch_size=1024, verbose=0, return_dict=True)["loss"]


@pytest.mark.parametrize("name", preset_names())
def test_every_presets_loss_equals_keras_evaluate(name, tmp_path):
    spec = get_preset(name)
    model, forward = _saved(spec, tmp_path)
    images, labels = _images(), np.random.default_rng(2).integers(0, 10, 64)
    got = numpy_loss(forward(prepare_inputs(images, spec.input_shape)), labels, spec)
    assert got == pytest.approx(_keras_loss(model, spec, images, labels), rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("loss", ["categorical_crossentropy", "mean_squared_error", "mae"])
@pytest.mark.parametrize("output", ["sigmoid", "linear", "softmax"])
def test_every_loss_equals_keras_evaluate(loss, output, tmp_path):
    """The one-hot losses, on probabilities (sigmoid, softmax) and on logits (linear)."""
    layers = ({"type": "Dense", "units": 32, "activation": "relu"},)
    layers += ({"type": "Dense", "units": 10, "activation": output},)
    spec = Spec(name=f"{output}-{loss}", layers=layers, train=TrainConfig(loss=loss))
    model, forward = _saved(spec, tmp_path)
    images, labels = _images(), np.random.default_rng(3).integers(0, 10, 64)
    got = numpy_loss(forward(prepare_inputs(images, spec.input_shape)), labels, spec)
    assert got == pytest.approx(_keras_loss(model, spec, images, labels), rel=1e-5, abs=1e-6)


def test_a_penalised_network_leaves_the_loss_to_keras():
    layer = {"type": "Dense", "units": 10, "activation": "softmax", "kernel_regularizer": "l2"}
    spec = Spec(name="l2", layers=(layer,))
    assert numpy_loss(np.full((2, 10), 0.1, np.float32), np.array([1, 2]), spec) is None


def test_the_clip_is_keras_epsilon():
    import keras

    assert keras.backend.epsilon() == KERAS_EPSILON


def _labels_and_predictions():
    """Some classes never predicted, one never present: the zero divisions included."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 9, 500)  # no 9s
    predictions = np.where(rng.random(500) < 0.7, labels, rng.integers(0, 10, 500))
    predictions[predictions == 3] = 4  # no 3 predicted
    return labels, predictions


def test_the_per_class_report_is_scikit_learns():
    from sklearn import metrics

    labels, predictions = _labels_and_predictions()
    names = [f"class {k}" for k in range(10)]
    expected = metrics.classification_report(
        labels, predictions, labels=range(10), target_names=names, zero_division=0,
        output_dict=True,
    )  # fmt: skip
    got = per_class_report(confusion_matrix(labels, predictions, 10), names)
    assert got == expected  # every value to the bit, the keys in order
    assert list(got) == list(expected)
    assert got["class 9"]["recall"] == 0.0 and got["class 3"]["precision"] == 0.0


def test_the_confusion_matrix_is_scikit_learns():
    from sklearn import metrics

    labels, predictions = _labels_and_predictions()
    expected = metrics.confusion_matrix(labels, predictions, labels=range(10))
    got = confusion_matrix(labels, predictions, 10)
    assert got.dtype == expected.dtype and (got == expected).all()


def test_a_trained_runs_measure_equals_keras(trained_run, mnist):
    """The whole test set, through the NumPy pass and loss, against Keras's `predict` (as
    training evaluates) and `model.evaluate`'s loss."""
    _, (x_test, y_test) = mnist
    model, spec = trained_run.model, trained_run.spec
    keras_figures = evaluate_model(model, spec, x_test, y_test, trained_run.class_names).to_dict()
    keras_loss = _keras_loss(model, spec, x_test, y_test)
    figures = measure(trained_run).to_dict()
    assert keras_figures.pop("test_loss") == pytest.approx(keras_loss, rel=1e-5)
    assert figures.pop("test_loss") == pytest.approx(keras_loss, rel=1e-5)
    assert figures == keras_figures


def test_a_penalised_network_is_evaluated_by_keras(tmp_path):
    """Keras adds the weight penalty to `evaluate`'s loss: `evaluate_model` asks it."""
    layers = ({"type": "Dense", "units": 10, "kernel_regularizer": "l2"},)
    spec = Spec(name="l2", layers=layers, train=TrainConfig(loss="categorical_crossentropy"))
    model, forward = _saved(spec, tmp_path)
    images, labels = _images(), np.random.default_rng(5).integers(0, 10, 64)
    evaluation = evaluate_model(model, spec, images, labels, [str(k) for k in range(10)])
    unpenalised = Spec(name="plain", layers=({"type": "Dense", "units": 10},), train=spec.train)
    plain = numpy_loss(forward(prepare_inputs(images, spec.input_shape)), labels, unpenalised)
    assert evaluation.loss == pytest.approx(_keras_loss(model, spec, images, labels), rel=1e-5)
    assert evaluation.loss > plain + 1e-3  # the penalty is in it


def _loads_none_of(heavy: set[str], argv: list[str]) -> str:
    """A `python -c` program running `digitlab` as its console script does (`main`, whose exit
    skips the interpreter's teardown but not the at-exit handlers) with `argv`, then printing
    on stderr which of the `heavy` packages the command imported."""
    return (
        "import atexit, sys\n"
        "from digitlab.cli import main\n"
        f"heavy = {heavy!r}\n"
        "atexit.register(lambda: print(sorted({m.split('.')[0] for m in sys.modules} & heavy),"
        " file=sys.stderr))\n"
        f"sys.argv = {['digitlab', *argv]!r}\n"
        "main()\n"
    )


def test_evaluate_json_needs_no_keras_jax_scikit_learn_or_matplotlib(tmp_path, mnist):
    run_dir = model_run(tmp_path / "run")
    probe = _loads_none_of(
        {"keras", "jax", "sklearn", "matplotlib"}, ["evaluate", str(run_dir), "--json"]
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "[]"
    figures = json.loads(out.stdout)
    assert np.asarray(figures["confusion_matrix"]).sum() == 10_000
    assert not (run_dir / "confusion_matrix.png").exists()  # --json draws nothing


# ------------------------------------------------------------------------------------ summary
def _keras_table(spec: Spec):
    """Keras's own table of `spec`'s model, its layers named as in a fresh process."""
    import keras

    from digitlab.model import build_model, layer_rows

    keras.backend.clear_session()  # names count from dense, dense_1 again
    model = build_model(spec)
    trainable = sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)
    return model.name, layer_rows(model), model.count_params(), trainable


def _assert_table_is_keras(spec: Spec) -> None:
    from digitlab.network import layer_table

    table = layer_table(spec, 10)
    assert table is not None, f"{spec.name}: the arithmetic left a known network to Keras"
    assert (table.name, table.rows, table.params, table.trainable) == _keras_table(spec)


@pytest.mark.parametrize("name", preset_names())
def test_every_presets_layer_table_is_keras(name):
    _assert_table_is_keras(get_preset(name))


def test_the_other_layers_tables_are_keras():
    layers = (
        {"type": "Rescaling", "scale": 2.0, "offset": -0.5},
        {"type": "RandomDistortion", "rotation": 90, "elastic_alpha": 100, "seed": 3},
        {"type": "RandomDegradation", "probability": 1, "kinds": ["blur", "gap"], "seed": 2},
        {"type": "Conv2D", "filters": 4, "kernel_size": [3, 2], "strides": 2, "padding": "same"},
        {"type": "BatchNormalization", "scale": False, "momentum": 0.9},
        {"type": "Activation", "activation": "swish"},
        {"type": "MaxPooling2D", "pool_size": 3, "strides": [1, 2]},
        {"type": "SpatialDropout2D", "rate": 1},
        {"type": "Conv2D", "filters": 6, "kernel_size": 2, "use_bias": False, "activation": None},
        {"type": "LayerNormalization", "center": False, "epsilon": 1e-3},
        {"type": "AveragePooling2D", "pool_size": 2, "padding": "same"},
        {"type": "Dense", "units": 5, "activation": "gelu"},  # on images: the last axis
        {"type": "GlobalAveragePooling2D", "keepdims": True},
        {"type": "Reshape", "target_shape": [5, 1]},
        {"type": "Flatten"},
        {"type": "Dropout", "rate": 0, "seed": 1},
        {"type": "Dense", "units": 7, "use_bias": False},
        {"type": "Dense", "units": 10, "activation": "softmax"},
    )
    _assert_table_is_keras(Spec(name="others", input="image", layers=layers))


DENSE_OUT = {"type": "Dense", "units": 10}
REFUSED = {  # what Keras refuses, each at the edge of what it takes (see _ACCEPTED)
    "conv on flat input": ("flat", {"type": "Conv2D", "filters": 2, "kernel_size": 3}),
    "rate above 1": ("flat", {"type": "Dropout", "rate": 1.01}),
    "rotation above 90": ("image", {"type": "RandomDistortion", "rotation": 90.5}),
    "elastic_sigma 0": ("image", {"type": "RandomDistortion", "elastic_sigma": 0}),
    "probability above 1": ("image", {"type": "RandomDegradation", "probability": 1.01}),
    "an unknown degradation": ("image", {"type": "RandomDegradation", "kinds": ["fog"]}),
    "no degradation": ("image", {"type": "RandomDegradation", "kinds": []}),
    "degrading flat input": ("flat", {"type": "RandomDegradation"}),
    "a kernel past the image": ("image", {"type": "Conv2D", "filters": 2, "kernel_size": 29}),
    "a pool past the image": ("image", {"type": "MaxPooling2D", "pool_size": 29}),
    "no pool size": ("image", {"type": "AveragePooling2D"}),
    "a reshape that loses pixels": ("flat", {"type": "Reshape", "target_shape": [28, 27]}),
    "an unknown argument": ("flat", {"type": "Dense", "units": 3, "unit": 4}),
    "an unknown activation": ("flat", {"type": "Dense", "units": 3, "activation": "rectified"}),
}  # fmt: skip
ACCEPTED = {
    "rate 1": ("flat", {"type": "Dropout", "rate": 1}),
    "rotation 90": ("image", {"type": "RandomDistortion", "rotation": 90.0}),
    "probability 0": ("image", {"type": "RandomDegradation", "probability": 0, "kinds": ["thin"]}),
    "a kernel the image's size": ("image", {"type": "Conv2D", "filters": 2, "kernel_size": 28}),
    "a pool the image's size": ("image", {"type": "MaxPooling2D", "pool_size": 28}),
    "max pooling's default size": ("image", {"type": "MaxPooling2D"}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_keras_refuses_is_left_to_keras(case):
    from digitlab.errors import SpecError
    from digitlab.network import describe, layer_table

    kind, layer = REFUSED[case]
    spec = Spec(name="edge", input=kind, layers=(layer, {"type": "Flatten"}, DENSE_OUT))
    assert layer_table(spec, 10) is None
    with pytest.raises(SpecError):
        describe(spec, 10)  # Keras's one-line refusal


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_what_keras_takes_at_the_edge_is_computed(case):
    kind, layer = ACCEPTED[case]
    _assert_table_is_keras(
        Spec(name="edge", input=kind, layers=(layer, {"type": "Flatten"}, DENSE_OUT))
    )


def test_an_output_layer_of_the_wrong_size_is_refused_by_keras():
    from digitlab.errors import SpecError
    from digitlab.network import describe

    with pytest.raises(SpecError, match="units"):
        describe(Spec(name="nine", layers=({"type": "Dense", "units": 9},)), 10)


def test_a_layer_the_arithmetic_does_not_know_is_described_by_keras():
    from digitlab.network import describe, layer_table

    layers = ({"type": "GaussianNoise", "stddev": 0.1}, {"type": "Dense", "units": 10})
    spec = Spec(name="noisy", layers=layers)
    assert layer_table(spec, 10) is None
    table = describe(spec, 10)
    assert [row["type"] for row in table.rows] == ["GaussianNoise", "Dense"]
    assert table.params == 7850


def test_the_activation_names_and_learning_rates_are_keras():
    import keras

    from digitlab.model import ACTIVATIONS, default_learning_rate
    from digitlab.network import ACTIVATION_NAMES, DEFAULT_LEARNING_RATES
    from digitlab.schema import OPTIMIZERS

    assert {name: keras.activations.get(name).__name__ for name in ACTIVATIONS} == ACTIVATION_NAMES
    assert {name: default_learning_rate(name) for name in OPTIMIZERS} == DEFAULT_LEARNING_RATES


def test_summary_needs_no_keras_or_jax():
    probe = _loads_none_of(
        {"keras", "jax", "sklearn", "matplotlib"}, ["summary", "--preset", "cnn"]
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "[]"
    assert "184,874 (184,682 trainable)" in out.stdout  # the cnn's, as Keras counts them


# ------------------------------------------------------------------------------------ explain
def _spec_run(spec: Spec, path):
    """A run folder holding a randomized, untrained model of `spec`."""
    from runfiles import config

    from digitlab.runs import read_run

    model, _ = _saved(spec, path.parent)
    path.mkdir()
    model.save(path / "model.keras")
    preprocessing = {"input": spec.input, "shape": list(spec.input_shape), "scale": 1 / 255}
    data = config(spec=spec.to_dict(), preprocessing=preprocessing)
    (path / "config.json").write_text(json.dumps(data))
    return read_run(path)


def _assert_probes_agree(run) -> None:
    """The NumPy probe against the compiled JAX one: layers, values, logits, gradients,
    integrated gradients and probabilities, to 1e-5 of each quantity's scale."""
    from digitlab.insight.probe import NumpyProbe, Probe

    numpy_probe, jax_probe = NumpyProbe.load(run), Probe(run)
    assert numpy_probe is not None, f"{run.spec.name}: left to JAX"
    assert numpy_probe.layers == jax_probe.layers

    def close(got, expected):
        expected = np.asarray(expected)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-5 * max(1.0, np.abs(expected).max())

    x = numpy_probe.inputs(_images(8))
    targets = np.arange(8, dtype=np.int32) % 10
    (values, logits), (jax_values, jax_logits) = numpy_probe.forward(x), jax_probe.forward(x)
    for got, expected in zip([*values, logits], [*jax_values, jax_logits], strict=True):
        close(got, expected)
    close(numpy_probe.gradient(x, targets), jax_probe.gradient(x, targets))
    for steps, target in ((32, targets), (0, np.full(8, -1, np.int32))):
        *_, chosen, saliency = numpy_probe._explain(x, target, steps)
        *_, jax_chosen, jax_saliency = jax_probe._explain(x, target, steps)
        assert (chosen == np.asarray(jax_chosen)).all()
        close(saliency, jax_saliency)
    close(numpy_probe.probabilities(logits), jax_probe.probabilities(np.asarray(jax_logits)))


@pytest.mark.parametrize("name", preset_names())
def test_every_presets_explanation_equals_jaxs(name, tmp_path):
    _assert_probes_agree(_spec_run(get_preset(name), tmp_path / "run"))


def test_the_other_layers_explanations_equal_jaxs(tmp_path):
    layers = (
        {"type": "Rescaling", "scale": 2.0, "offset": -0.5},
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "strides": 2, "padding": "same"},
        {"type": "BatchNormalization", "center": False},
        {"type": "Activation", "activation": "tanh"},
        {"type": "SpatialDropout2D", "rate": 0.5},
        {"type": "Conv2D", "filters": 6, "kernel_size": [2, 3], "activation": "sigmoid"},
        {"type": "AveragePooling2D", "pool_size": [2, 3], "strides": [1, 2]},
        {"type": "GlobalAveragePooling2D", "keepdims": True},
        {"type": "Reshape", "target_shape": (3, 2)},
        {"type": "Flatten"},
        {"type": "GaussianNoise", "stddev": 1.0},
        {"type": "Dense", "units": 12, "activation": "softmax"},
        {"type": "Dense", "units": 10, "activation": "tanh"},
    )
    _assert_probes_agree(
        _spec_run(Spec(name="others", input="image", layers=layers), tmp_path / "run")
    )


@pytest.mark.parametrize(
    "layer",
    [
        {"type": "MaxPooling2D"},
        {"type": "LayerNormalization"},
        {"type": "Activation", "activation": "gelu"},
    ],
)
def test_a_layer_without_a_gradient_rule_is_explained_by_jax(layer, tmp_path):
    from digitlab.insight.probe import NumpyProbe, Probe

    spec = Spec(name="other", input="image", layers=(layer, {"type": "Flatten"}, DENSE_OUT))
    run = _spec_run(spec, tmp_path / "run")
    assert NumpyProbe.load(run) is None
    probe = Probe.of(run)
    assert type(probe) is Probe
    assert probe.saliency(_images(2)).shape == (2, 28, 28)


def test_explain_needs_no_keras_or_jax(tmp_path, mnist):
    run_dir = model_run(tmp_path / "run")
    probe = _loads_none_of({"keras", "jax", "sklearn"}, ["explain", str(run_dir), "--index", "0"])
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "[]"
    assert (run_dir / "inspect" / "explain-test0.png").stat().st_size > 0
