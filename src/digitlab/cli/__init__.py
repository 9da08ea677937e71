"""The `digitlab` command: a thin shell over the library, one call and its output per command.

`app` is the Typer app (`digitlab.cli:main` is the console script). Each module below adds one
group of commands to it; `digitlab --help` lists them in `HELP_ORDER`.
"""

from __future__ import annotations

from digitlab.cli import (  # noqa: F401
    data,
    experiment,
    inspect,
    prediction,
    robustness,
    runs,
    training,
    tune,
)
from digitlab.cli.app import app, main

__all__ = ["app", "main"]

# The order `digitlab --help` lists the commands in (the command groups, data and tune, follow).
HELP_ORDER = (
    "show",
    "summary",
    "train",
    "runs",
    "evaluate",
    "predict",
    "preprocess",
    "serve",
    "experiment",
    "report",
    "compare",
    "board",
    "inspect",
    "explain",
    "calibrate",
    "robustness",
)
app.registered_commands.sort(key=lambda command: HELP_ORDER.index(command.name))
