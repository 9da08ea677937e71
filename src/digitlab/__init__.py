"""digitlab: neural networks on handwritten digits, from the classic Keras notebook to a tool.

The public API, importable from `digitlab` (see `examples/notebook.ipynb`):

    load_dataset("mnist")          -> ((x_train, y_train), (x_test, y_test)) as uint8 arrays
    build_model(get_preset("seed")) -> the notebook's keras.Sequential
    train(spec)                    -> a Run (its directory holds model, config, metrics, pictures)
    evaluate(run)                  -> an Evaluation (accuracy, confusion matrix, report)
    predict(run, images)           -> a Prediction (digits and their probabilities)
    load_run("latest")             -> a Run
    compare(runs, out_dir)         -> a Comparison (overlaid curves, differing settings)
    experiment("dropout")          -> an experiment's outcome (variants × seeds as runs)

In Jupyter, a `Run`, `Evaluation` or `Prediction` shows itself inline (figures, curves and
the confusion matrix); `repr()` is one line.

Keras is imported only when a function that needs it is first used, so `import digitlab`
and the CLI start fast. The modules are named for their stage (training, evaluation,
prediction), not for the function they export: a submodule `digitlab.train` would replace
the function `digitlab.train` on the package as soon as it was imported.
"""

import os

# Keras reads the backend once, at import; ours is JAX unless the user chose another.
os.environ.setdefault("KERAS_BACKEND", "jax")

from digitlab._version import __version__ as __version__

_EXPORTS = {
    "load_dataset": "digitlab.data",
    "build_model": "digitlab.model",
    "train": "digitlab.training",
    "evaluate": "digitlab.evaluation",
    "predict": "digitlab.prediction",
    "load_run": "digitlab.runs",
    "compare": "digitlab.report",
    "get_preset": "digitlab.presets",
    "load_spec_file": "digitlab.config",
    "resume": "digitlab.training",
    "DigitlabError": "digitlab.errors",
}
__all__ = [*_EXPORTS, "experiment"]


def experiment(definition, **options):
    """Run a controlled experiment: each variant × seed trained as a normal run, then compared.

    Args:
        definition: a built-in name ("dropout", "batch-size", "normalization"), the path of
            an experiment TOML file (see `examples/`), or a loaded definition.
        **options: as `digitlab.experiments.run_experiment` (seeds, epochs, train_samples,
            quick, runs_dir, resume, data_dir, ...), and `workers` (worker processes here)
            and `storage` (a database URL every machine reaches), as `--workers` and
            `--storage` (`digitlab.experiments.launch.run`).

    Returns:
        The outcome: `.folder` (the experiment's folder with report.html) and `.record`.

    Raises:
        SpecError: no such experiment, or the file has a bad key or value.

    Example:
        >>> import digitlab
        >>> outcome = digitlab.experiment("dropout", seeds=1, epochs=2, quick=True)
        >>> outcome.folder  # doctest: +SKIP
    """
    from digitlab.experiments import load_definition
    from digitlab.experiments.launch import run

    if isinstance(definition, str | os.PathLike):
        definition = load_definition(definition)
    return run(definition, **options)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'digitlab' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    """The public API first: what a notebook's tab completion and `dir(digitlab)` show."""
    return sorted({*__all__, "__version__"})
