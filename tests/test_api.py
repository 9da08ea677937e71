"""The public API: every name the package exports is the documented callable, lazily."""

from __future__ import annotations

import subprocess
import sys


def test_exports_stay_functions_after_their_modules_are_imported():
    import digitlab.evaluation
    import digitlab.prediction
    import digitlab.training  # a submodule import must not shadow the function it exports

    for name in (
        "load_dataset",
        "build_model",
        "train",
        "resume",
        "evaluate",
        "predict",
        "load_run",
        "get_preset",
        "load_spec_file",
    ):
        exported = getattr(digitlab, name)
        assert callable(exported) and exported.__name__ == name, name
        assert exported.__doc__, f"{name} has no docstring"


def test_importing_the_package_does_not_import_keras():
    code = "import sys, digitlab; print('keras' in sys.modules, digitlab.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "False"
