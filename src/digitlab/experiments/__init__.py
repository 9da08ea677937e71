"""Controlled experiments: variants × seeds trained as normal runs, measured side by side.

`digitlab experiment dropout|batch-size|normalization|FILE.toml`; see `runner.run_experiment`.
"""

from digitlab.experiments.definitions import BUILT_IN, experiment_names, load_definition
from digitlab.experiments.runner import run_experiment

__all__ = ["BUILT_IN", "experiment_names", "load_definition", "run_experiment"]
