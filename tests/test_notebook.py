"""examples/notebook.ipynb runs top to bottom in a Jupyter kernel from the project's venv.

The kernel is registered in a temporary folder (`ipykernel install --prefix`) that points
at this interpreter, so the notebook sees the same digitlab as the tests; a cell that
raises fails the test. The notebook is committed without outputs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "notebook.ipynb"
KERNEL = "digitlab-test"


def test_the_notebook_is_committed_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
    assert "parameters" in code[0].metadata.get("tags", [])  # the budget, at the top


def test_the_notebook_follows_the_original_steps_with_a_note_for_each():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    source = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    for step in (
        'load_dataset("mnist")',
        "imshow(x_train[0]",
        "build_model",
        ".summary()",
        "digitlab.train(",
        "EPOCHS = 10",
        "predict(run, x_test[0])",
        "predict(run, x_test[:20])",
        "argmax(axis=1)",
        "digitlab.evaluate(run)",
        "tune(",
    ):
        assert step in source, step
    kinds = [cell.cell_type for cell in nb.cells]
    for i, kind in enumerate(kinds):  # every code cell follows a markdown note or a code cell
        if kind == "code" and i:
            assert "markdown" in kinds[:i]
    assert sum(kind == "markdown" for kind in kinds) >= 8


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    """A kernelspec named KERNEL that runs this interpreter (the project's venv)."""
    prefix = tmp_path_factory.mktemp("jupyter")
    install = [sys.executable, "-m", "ipykernel", "install", "--prefix", str(prefix)]
    subprocess.run(
        [*install, "--name", KERNEL, "--display-name", "digitlab (test)"],
        check=True,
        capture_output=True,
    )
    return prefix / "share" / "jupyter"


@pytest.mark.slow
def test_the_notebook_runs_top_to_bottom(kernel, tmp_path, monkeypatch, mnist):
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_PATH", str(kernel))
    monkeypatch.setenv("DIGITLAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # A reduced budget, as papermill would inject it after the parameters cell: the same
    # 10 epochs on fewer digits, and a smaller search, to stay within 2 minutes in CI.
    budget = "TRAIN_SAMPLES = 6000\nTUNE_TRIALS = 2\nTUNE_SAMPLES = 3000"
    nb.cells.insert(2, nbformat.v4.new_code_cell(budget))
    client = NotebookClient(
        nb, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the cell if any cell raises

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    html = [out["data"]["text/html"] for out in outputs if "text/html" in out.get("data", {})]
    assert any("Training curves" in page and "data:image/png;base64," in page for page in html)
    assert any("<strong>Evaluation</strong>" in page for page in html)
    assert any("<strong>Prediction</strong>" in page for page in html)
    assert any("image/png" in out.get("data", {}) for out in outputs)  # digit 0, plotted
    warned = [
        out["text"]
        for out in outputs
        if out.get("name") == "stderr" and "Warning" in out.get("text", "")
    ]
    assert not warned  # e.g. tqdm's "TqdmWarning: IProgress not found" under the tune cell
    text = "".join(out.get("text", "") for out in outputs)
    assert "Epoch 10/10" in text and "\b" not in text  # one plain line per epoch, no bar
    assert "confusion matrix (rows: true label" in text and "most confused" in text
    assert "best: trial" in text
    from digitlab.runs import list_runs

    runs = {run.spec.name: run for run in list_runs(tmp_path / "runs")}
    assert len(runs) == 2 and runs["seed"].epochs_done == 10  # trained, and the tuned best
    assert runs["seed"].dataset.train_samples == 6000  # the injected budget took effect


# Imports `module` as a Jupyter kernel without ipywidgets would (tqdm.autonotebook looks for
# ipykernel's shell module, then for ipywidgets), and prints the warnings it raised.
IN_A_KERNEL = """
import sys, types, warnings
sys.modules["ipykernel.zmqshell"] = types.ModuleType("ipykernel.zmqshell")
sys.modules["ipywidgets"] = None  # not installed
import IPython
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    __import__(sys.argv[1])
print("\\n".join(f"{w.category.__name__}: {w.message}" for w in caught))
"""


def _warnings_importing(module: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", IN_A_KERNEL, module], capture_output=True, text=True, check=True
    )
    return done.stdout


def test_tuning_imports_optuna_in_a_kernel_without_ipywidgets_with_no_warning():
    assert "IProgress not found" in _warnings_importing("optuna")  # what the notebook showed
    assert "IProgress" not in _warnings_importing("digitlab.tune")
