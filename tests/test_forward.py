"""The NumPy forward pass (`digitlab.forward`) against Keras's own `predict`, its oracle.

Every preset's architecture, and a network of the other layers it runs, is built with random
weights and biases (no training), saved as model.keras, read back by `load_forward` and run
on random images: outputs and probabilities must equal Keras's to 1e-5 (issue 23).
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from runfiles import model_run

from digitlab.config import Spec
from digitlab.forward import load_forward
from digitlab.model import build_model, output_activation, prepare_inputs, to_probabilities
from digitlab.presets import get_preset, preset_names


def _randomized(model, seed: int = 0):
    """Random biases, normalization scales and statistics: the initial zeros and ones
    would hide a forward pass that forgets to add or divide by them."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape, name = tuple(variable.shape), variable.path
        if "float" not in str(variable.dtype) or len(shape) != 1:
            continue
        if name.endswith("variance"):
            variable.assign(rng.uniform(0.5, 2.0, shape).astype(np.float32))
        else:
            variable.assign(rng.normal(0.0, 0.5, shape).astype(np.float32))
    return model


def _images(n: int = 6, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def _compare(spec: Spec, tmp_path) -> None:
    model = _randomized(build_model(spec))
    path = tmp_path / f"{spec.name}.keras"
    model.save(path)
    forward = load_forward(path)
    assert forward is not None, f"{spec.name}: a layer the NumPy pass should run was refused"
    x = prepare_inputs(_images(), spec.input_shape)
    expected = model.predict(x, verbose=0)
    got = forward(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    activation = output_activation(spec)
    np.testing.assert_allclose(
        to_probabilities(got, activation), to_probabilities(expected, activation), atol=1e-5
    )


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_predicts_as_keras_does(name, tmp_path):
    _compare(get_preset(name), tmp_path)


def test_the_other_layers_predict_as_keras_does(tmp_path):
    layers = (
        {"type": "Rescaling", "scale": 2.0, "offset": -0.5},
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, "strides": 2, "padding": "same"},
        {"type": "LayerNormalization"},
        {"type": "Activation", "activation": "tanh"},
        {"type": "MaxPooling2D", "pool_size": 2},
        {"type": "SpatialDropout2D", "rate": 0.5},
        {"type": "Conv2D", "filters": 6, "kernel_size": 2, "activation": "relu"},
        {"type": "GlobalAveragePooling2D"},
        {"type": "Reshape", "target_shape": (3, 2)},
        {"type": "Flatten"},
        {"type": "GaussianNoise", "stddev": 1.0},
        {"type": "Dense", "units": 10, "activation": "softmax"},
    )
    _compare(Spec(name="others", input="image", layers=layers), tmp_path)


def test_a_layer_it_does_not_run_is_left_to_keras(tmp_path):
    spec = Spec(name="gelu", layers=({"type": "Dense", "units": 10, "activation": "gelu"},))
    build_model(spec).save(tmp_path / "gelu.keras")
    assert load_forward(tmp_path / "gelu.keras") is None


def test_weights_that_do_not_fit_the_config_are_left_to_keras(tmp_path):
    """A model file whose config says 50 units over weights of 100 is not run silently."""
    build_model(get_preset("seed")).save(tmp_path / "good.keras")
    with zipfile.ZipFile(tmp_path / "good.keras") as good:
        files = {name: good.read(name) for name in good.namelist()}
    config = json.loads(files["config.json"])
    config["config"]["layers"][1]["config"]["units"] = 50
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "edited.keras", "w") as edited:
        for name, data in files.items():
            edited.writestr(name, data)
    assert load_forward(tmp_path / "edited.keras") is None
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    assert load_forward(tmp_path / "junk.keras") is None


def test_a_run_predicts_without_importing_keras_or_jax(tmp_path):
    run_dir = model_run(tmp_path / "run")
    probe = (
        "import sys, numpy as np\n"
        "from digitlab.runs import read_run\n"
        f"p = read_run({str(run_dir)!r}).predict_proba(np.zeros((3, 28, 28), np.uint8))\n"
        "print(p.shape, sorted({m.split('.')[0] for m in sys.modules} & {'keras', 'jax'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(3, 10) []"


def test_a_runs_probabilities_equal_its_keras_models(tmp_path):
    from digitlab.runs import read_run

    run = read_run(model_run(tmp_path / "run"))
    images = _images(20)
    got = run.predict_proba(images)
    outputs = run.model.predict(prepare_inputs(images, run.spec.input_shape), verbose=0)
    np.testing.assert_allclose(got, to_probabilities(outputs, "sigmoid"), atol=1e-5)
    assert "keras" in type(run.model).__module__  # the model itself still loads, for inspect


def test_a_trained_runs_probabilities_equal_its_keras_models(trained_run, mnist):
    """Trained sigmoid outputs reach 1e-7 and below, where a sigmoid computed another way
    (0.5 + 0.5·tanh) would shift the probabilities; the test set's are checked whole."""
    _, (x_test, _) = mnist
    got = trained_run.predict_proba(x_test)
    outputs = trained_run.model.predict(prepare_inputs(x_test), batch_size=1024, verbose=0)
    np.testing.assert_allclose(got, to_probabilities(outputs, "sigmoid"), atol=1e-5)
