"""The lesson notebooks (`examples/lesson-*.ipynb`, one per built-in experiment) run top to
bottom in a Jupyter kernel, as a learner would: guess first, run the experiment through the
Python API, read the answer, the verdicts and the figures. The suite runs each as a smoke run
(`QUICK = True` injected after the parameters cell, as papermill would), which takes seconds;
the notebook's own budget is a few minutes."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from digitlab.experiments import experiment_names
from tests.test_notebook import KERNEL, kernel  # noqa: F401  (the fixture)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _lesson(name: str) -> nbformat.NotebookNode:
    return nbformat.read(EXAMPLES / f"lesson-{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", experiment_names())
def test_each_lesson_asks_for_a_guess_before_it_runs(name):
    nb = _lesson(name)
    nbformat.validate(nb)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code)
    assert "parameters" in code[0].metadata.get("tags", [])
    sources = [cell.source for cell in code]
    guess = next(i for i, s in enumerate(sources) if "MY_GUESS" in s)
    run = next(i for i, s in enumerate(sources) if "run_experiment(" in s)
    assert guess < run  # the guess comes first
    assert f'load_definition("{name}")' in "\n".join(sources)
    markdown = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    assert f"digitlab experiment {name}" in markdown  # the full command, linked


@pytest.mark.slow
@pytest.mark.parametrize("name", experiment_names())
def test_each_lesson_runs_top_to_bottom(name, kernel, tmp_path, monkeypatch, mnist):  # noqa: F811
    from nbclient import NotebookClient

    monkeypatch.setenv("JUPYTER_PATH", str(kernel))
    monkeypatch.setenv("DIGITLAB_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = _lesson(name)
    nb.cells.insert(2, nbformat.v4.new_code_cell("QUICK = True"))
    client = NotebookClient(
        nb, kernel_name=KERNEL, timeout=600, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the cell if any cell raises

    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    text = "".join(out.get("text", "") for out in outputs)
    assert "smoke run" in text  # the answer says a quick run concludes nothing
    assert "Your guess:" in text
    from digitlab.experiments import load_definition

    for claim in load_definition(name).claims:
        assert f"{claim.name}: not tested" in text  # a smoke run decides no claim
    assert any("image/png" in out.get("data", {}) for out in outputs)  # the figures, inline
    warned = [o["text"] for o in outputs if o.get("name") == "stderr" and "Warning" in o["text"]]
    assert not warned
