"""The public API as a notebook user meets it: `dir(digitlab)`, docstrings, a fast lazy
import, one-line reprs, inline HTML and `Evaluation.report()` that prints like the CLI."""

from __future__ import annotations

import base64
import inspect
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from runfiles import fake_run
from typer.testing import CliRunner

import digitlab

PUBLIC = ["load_dataset", "build_model", "train", "evaluate", "predict", "load_run", "compare"]
PUBLIC += ["experiment"]


# --------------------------------------------------------------------------- discoverability
def test_dir_and_all_list_the_public_functions_not_submodules():
    for name in PUBLIC:
        assert name in digitlab.__all__
        assert name in dir(digitlab)
        assert callable(getattr(digitlab, name))
    assert "cli" not in dir(digitlab) and "runs" not in dir(digitlab)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_function_has_a_docstring_with_an_example(name):
    doc = inspect.getdoc(getattr(digitlab, name)) or ""
    assert "Example" in doc and "digitlab." in doc, f"digitlab.{name} has no example"


def test_import_loads_no_keras_or_jax():
    code = (
        "import sys, time; t = time.perf_counter(); import digitlab; t = time.perf_counter() - t;"
        "import json; print(json.dumps({'t': t, 'heavy': sorted({m.split('.')[0] for m in "
        "sys.modules} & {'keras', 'jax', 'matplotlib', 'sklearn', 'numpy'})}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["heavy"] == []  # the time itself is in benchmarks/RESULTS.md


def test_experiment_takes_a_name_and_refuses_an_unknown_one_in_one_line():
    with pytest.raises(digitlab.DigitlabError, match="unknown experiment|no experiment"):
        digitlab.experiment("no-such-experiment")


# ----------------------------------------------------------------------------------- a run
def _run_with_pictures(tmp_path: Path):
    from digitlab.runs import read_run, write_history

    path = fake_run(tmp_path / "20260101-000000-seed", accuracy=0.9781)
    metrics = json.loads((path / "metrics.json").read_text())
    metrics["confusion_matrix"] = np.diag([5] * 10).tolist()
    (path / "metrics.json").write_text(json.dumps(metrics))
    history = {"loss": [0.5], "accuracy": [0.8], "val_loss": [0.41], "val_accuracy": [0.875]}
    write_history(path / "history.csv", history)
    return read_run(path)


def test_run_repr_is_one_short_line(tmp_path):
    run = _run_with_pictures(tmp_path)
    text = repr(run)
    assert "\n" not in text and len(text) < 120, text
    assert text == "<Run 20260101-000000-seed: mnist, test accuracy 97.81%, complete>"


def _images(html: str) -> list[bytes]:
    sources = re.findall(r'<img src="([^"]+)"', html)
    assert all(s.startswith("data:image/png;base64,") for s in sources), "only inline PNGs"
    return [base64.b64decode(s.split(",", 1)[1]) for s in sources]


def test_run_html_shows_figures_curves_and_confusion_matrix_inline(tmp_path):
    run = _run_with_pictures(tmp_path)
    html = run._repr_html_()
    assert "97.81%" in html and "87.50%" in html  # test and validation accuracy
    assert "Training curves" in html and "Confusion matrix" in html
    pictures = _images(html)
    assert len(pictures) == 2 and all(p.startswith(b"\x89PNG") for p in pictures)
    assert "http://" not in html and "https://" not in html  # nothing fetched
    assert not (run.path / "confusion_matrix.png").exists()  # display writes nothing


# ---------------------------------------------------------------------------- an evaluation
def _evaluation():
    from digitlab.evaluation import Evaluation

    labels = np.array([0, 1, 2, 2, 1, 0, 7, 7])
    predicted = np.array([0, 1, 2, 1, 1, 0, 7, 2])
    probabilities = np.eye(10)[predicted] * 0.9 + 0.01
    cm = np.zeros((10, 10), dtype=int)
    for t, p in zip(labels, predicted, strict=True):
        cm[t, p] += 1
    return Evaluation(0.3456, 0.75, cm, [str(d) for d in range(10)], probabilities, labels)


def test_evaluation_report_prints_as_the_cli_and_gives_the_numbers(tmp_path, monkeypatch):
    import digitlab.evaluation

    evaluation = _evaluation()
    report = evaluation.report()
    text = str(report)
    assert text.startswith("test loss 0.3456   test accuracy 75.00%   (2 of 8 wrong)")
    assert "confusion matrix" in text and "precision" in text and "most confused:" in text
    assert report.to_dict()["7"]["recall"] == 0.5 and report["accuracy"] == 0.75
    assert evaluation.to_dict()["classification_report"] == report.to_dict()
    json.dumps(evaluation.to_dict())  # still JSON

    fake_run(tmp_path / "r")
    monkeypatch.setattr(digitlab.evaluation, "evaluate", lambda run, data_dir=None: evaluation)
    from digitlab.cli import app

    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "r")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert text in result.output  # the CLI prints exactly this report


def test_evaluation_repr_and_html():
    evaluation = _evaluation()
    assert repr(evaluation) == "<Evaluation: test accuracy 75.00%, loss 0.3456, 2 of 8 wrong>"
    html = evaluation._repr_html_()
    assert "75.00%" in html and "2→1 (1)" in html
    assert len(_images(html)) == 1


# ----------------------------------------------------------------------------- a prediction
def test_prediction_repr_and_html():
    from digitlab.prediction import Prediction

    names = [str(d) for d in range(10)]
    one = Prediction(np.eye(10)[[7]] * 0.98 + 0.002, names)
    assert repr(one) == "<Prediction: 1 image, 7 (98.20%)>"
    many = Prediction(np.eye(10)[np.arange(12) % 10], names, [f"x_test[{i}]" for i in range(12)])
    assert repr(many) == "<Prediction: 12 images, 0 1 2 3 4 5 6 7 8 9 …>"
    html = many._repr_html_()
    assert "x_test[11]" in html and "12 images" in html
    assert "<script" not in Prediction(np.eye(10)[[1]], names, ["<script>"])._repr_html_()


# ------------------------------------------------------------------------------- progress
def test_train_progress_maps_to_notebook_friendly_keras_verbosity(monkeypatch):
    from digitlab.training import progress_verbosity

    assert progress_verbosity("epoch") == 2 and progress_verbosity(True) == 2
    assert progress_verbosity("none") == 0 and progress_verbosity(False) == 0
    assert progress_verbosity(None, verbose=1) == 1
    monkeypatch.setitem(sys.modules, "ipykernel", object())  # in Jupyter: never a \b\r bar
    assert progress_verbosity("bar") == 2
    with pytest.raises(digitlab.DigitlabError, match="progress must be one of"):
        progress_verbosity("fancy")
    assert "progress" in inspect.signature(digitlab.train).parameters
    assert "progress" in inspect.signature(digitlab.resume).parameters
