"""digitlab: neural networks on handwritten digits, from the classic Keras notebook to a tool.

The public API, importable from `digitlab`:

    load_dataset("mnist")          -> ((x_train, y_train), (x_test, y_test)) as uint8 arrays
    build_model(get_preset("seed")) -> the notebook's keras.Sequential
    train(spec)                    -> a Run (its directory holds model, config, metrics, pictures)
    evaluate(run)                  -> an Evaluation (accuracy, confusion matrix, report)
    predict(run, images)           -> a Prediction (digits and their probabilities)
    load_run("latest")             -> a Run

Keras is imported only when a function that needs it is first used, so the CLI starts fast.
The modules are named for their stage (training, evaluation, prediction), not for the
function they export: a submodule `digitlab.train` would replace the function `digitlab.train`
on the package as soon as it was imported.
"""

import os

# Keras reads the backend once, at import; ours is JAX unless the user chose another.
os.environ.setdefault("KERAS_BACKEND", "jax")

__version__ = "0.1.0"

_EXPORTS = {
    "load_dataset": "digitlab.data",
    "build_model": "digitlab.model",
    "get_preset": "digitlab.presets",
    "load_spec_file": "digitlab.config",
    "train": "digitlab.training",
    "resume": "digitlab.training",
    "evaluate": "digitlab.evaluation",
    "predict": "digitlab.prediction",
    "load_run": "digitlab.runs",
    "DigitlabError": "digitlab.errors",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'digitlab' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
