"""Controlled experiments: variants × seeds trained as normal runs, measured side by side.

`digitlab experiment dropout|batch-size|normalization|FILE.toml`; see `runner.run_experiment`.
The names below load on first use, so reading a record (`experiments.record`) doesn't import
the runner.
"""

import importlib

_EXPORTS = {
    "BUILT_IN": "digitlab.experiments.definitions",
    "experiment_names": "digitlab.experiments.definitions",
    "load_definition": "digitlab.experiments.definitions",
    "run_experiment": "digitlab.experiments.runner",
}

__all__ = [*_EXPORTS]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'digitlab.experiments' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
