"""report.html for runs and experiments, and `digitlab compare`: what the pages hold, that
they load nothing else, and that bad input is one line (exit 2)."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from runfiles import config, fake_run
from typer.testing import CliRunner

from digitlab import plots
from digitlab.cli import app
from digitlab.errors import RunError
from digitlab.report import (
    compare,
    pages,
    write_experiment_report,
    write_report,
    write_run_report,
)
from digitlab.runs import read_run, write_history
from digitlab.schema import RunConfig

runner = CliRunner()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def invoke(*args, **kwargs):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, **kwargs)


def full_run(path: Path, *, accuracy=0.9, description="", train=None, dataset=None) -> Path:
    """A run folder as training leaves it, without the model: config, history, metrics with
    a confusion matrix (3 taken for 5 four times) and a per-class report."""
    fake_run(path, accuracy=accuracy)
    data = config()
    data["spec"]["description"] = description
    data["spec"]["train"] |= train or {}
    if dataset is not None:
        data["spec"]["train"]["dataset"] = dataset
        data["dataset"]["name"] = dataset
    (path / "config.json").write_text(json.dumps(data))
    write_history(
        path / "history.csv",
        {"loss": [1.0, 0.5], "accuracy": [0.7, 0.8], "val_loss": [1.1, 0.7],
         "val_accuracy": [0.6, 0.75]},
    )  # fmt: skip
    cm = np.diag([100] * 10)
    cm[3, 5] = 4
    report = {str(d): {"precision": 0.9, "recall": 0.8, "f1-score": 0.85, "support": 100}
              for d in range(10)}  # fmt: skip
    average = {"precision": 0.9, "recall": 0.8, "f1-score": 0.85, "support": 1000}
    report |= {"accuracy": accuracy, "macro avg": average}
    metrics = {
        "epochs": 2,
        "train_seconds": 4.5,
        "test_accuracy": accuracy,
        "test_loss": 0.3125,
        "test_errors": 4,
        "confusion_matrix": cm.tolist(),
        "classification_report": report,
        "most_confused": [{"true": "3", "predicted": "5", "count": 4}],
    }
    (path / "metrics.json").write_text(json.dumps(metrics))
    return path


class _Page(HTMLParser):
    """Every src and href of a page, and its text."""

    def __init__(self, html: str):
        super().__init__()
        self.sources: list[str] = []
        self.links: list[str] = []
        self.text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "src" in attrs:
            self.sources.append(attrs["src"])
        if "href" in attrs:
            self.links.append(attrs["href"])

    def handle_data(self, data):
        self.text.append(data)


def assert_self_contained(html: str) -> _Page:
    page = _Page(html)
    assert '<meta name="viewport"' in html
    assert page.sources and all(src.startswith("data:image/png;base64,") for src in page.sources)
    for src in page.sources:
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert not [link for link in page.links if "://" in link or link.startswith("//")]
    assert "@import" not in html and "url(" not in html
    return page


# ------------------------------------------------------------------------------------ runs
def test_picture_names_are_the_ones_evaluation_writes():
    from digitlab import evaluation

    assert pages.CURVES_PNG == evaluation.CURVES_PNG
    assert pages.CONFUSION_PNG == evaluation.CONFUSION_PNG
    assert pages.MISCLASSIFIED_PNG == evaluation.MISCLASSIFIED_PNG


def test_a_run_report_holds_config_metrics_per_class_report_and_inlined_figures(tmp_path):
    run = read_run(full_run(tmp_path / "run", accuracy=0.9123))
    path = write_run_report(run)

    assert path == run.path / "report.html"
    html = path.read_text()
    page = assert_self_contained(html)
    text = " ".join(page.text)
    assert "91.23%" in text and "0.3125" in text  # test accuracy and loss
    assert "train.batch_size" in text and "sparse_categorical_crossentropy" in text  # config
    assert "Dense(units=100, activation=sigmoid)" in text  # the seed preset's first layer
    table = html.split('id="classification-report"')[1].split("</table>")[0]
    assert table.count("<tr") == 1 + 10 + 1  # header, ten digits, macro avg
    assert "3 taken for 5 (4×)" in text
    # Curves and both confusion views drawn from the run's files, then the page inlines them
    for name in ("training_curves", "confusion_matrix", "confusion_matrix_normalized"):
        assert (run.path / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
        assert f'id="fig-{name}-png"' in html
    assert len(page.sources) == 3  # no misclassified gallery: that needs the model


def test_a_run_report_inlines_the_misclassified_gallery_when_the_run_has_one(tmp_path):
    folder = full_run(tmp_path / "run")
    images = np.zeros((2, 28, 28), np.uint8)
    plots.save_misclassified(images, np.array([3, 9]), np.array([5, 4]), list("0123456789"),
                             folder / "misclassified.png")  # fmt: skip
    html = write_run_report(folder).read_text()
    src = html.split('id="fig-misclassified-png"')[1].split('src="')[1].split('"')[0]
    assert base64.b64decode(src.split(",", 1)[1]) == (folder / "misclassified.png").read_bytes()


def test_a_run_report_escapes_what_a_run_folder_says(tmp_path):
    folder = full_run(tmp_path / "run", description='<script>alert("x")</script> & <b>bold</b>')
    html = write_run_report(folder).read_text()
    assert "<script" not in html and "<b>bold" not in html
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold" in html


def test_an_interrupted_run_report_says_so_and_has_no_test_figures(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config(status="interrupted", epochs_done=3)))
    write_history(folder / "history.csv", {"loss": [1.0, 0.6, 0.5]})
    html = write_run_report(folder).read_text()
    assert "interrupted</strong> after 3 epochs" in html
    assert "confusion" not in html.split('id="figures"')[1]  # only the curves
    assert html.count("data:image/png;base64,") == 1


def test_a_run_report_can_be_written_into_a_staging_folder_before_config_json(tmp_path):
    """What training does: pictures and metrics.json are in; config.json is written last."""
    source = full_run(tmp_path / "source")
    staging = tmp_path / ".staging-1-run"
    staging.mkdir()
    for name in ("history.csv", "metrics.json"):
        (staging / name).write_bytes((source / name).read_bytes())
    run_config = RunConfig.model_validate_json((source / "config.json").read_text())

    (staging / ".target").write_text("20260101-120000-seed")  # what staged_run leaves there
    html = write_run_report(staging, config=run_config).read_text()
    assert not (staging / "config.json").exists()
    assert "<h1>Run 20260101-120000-seed</h1>" in html and ".staging" not in html
    assert "90.00%" in html and html.count("data:image/png;base64,") == 3


def test_a_row_normalised_confusion_matrix_shows_each_true_class_as_shares():
    cm = np.array([[98, 2, 0], [0, 0, 0], [1, 4, 45]])
    shares = plots.row_normalized(cm)
    np.testing.assert_allclose(shares, [[0.98, 0.02, 0], [0, 0, 0], [0.02, 0.08, 0.9]])

    fig = plots._normalized_confusion_figure(cm, ["a", "b", "c"], title="t")
    errors = fig.axes[0].images[1]  # coloured by the errors only; the diagonal is masked
    assert errors.get_array().mask.diagonal().all()
    assert errors.norm.vmax == pytest.approx(8.0)  # the largest error, 4 of 50, in %
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"98", "2.0", "8.0", "90"} <= texts


# ----------------------------------------------------------------------------- experiments
def summary(mean, std, values):
    return {"mean": mean, "std": std, "values": values}


def experiment_folder(runs_dir: Path, run_names: list[str], **changes) -> Path:
    """An experiment folder as digitlab.experiments writes it (checked against its schema)."""
    from digitlab.experiments.schema import ExperimentRecord

    folder = runs_dir / "experiments" / "20260101-120000-dropout"
    folder.mkdir(parents=True)
    variant = {
        "seeds": [0, 1],
        "batch_size": 32,
        "learning_rate": 0.001,
        "final_train_loss": summary(0.01, 0.002, [0.009, 0.011]),
        "final_val_loss": summary(0.31, 0.02, [0.29, 0.33]),
        "generalization_gap": summary(0.3, 0.02, [0.28, 0.32]),
        "seconds": summary(30.75, 1.5, [29.25, 32.25]),
        "updates": 3125,
    }
    data = {
        "name": "dropout",
        "question": "Does dropout reduce overfitting on 5,000 digits?",
        "anchor": "Srivastava et al. 2014, Table 2: 1.60% test error without dropout, 1.25% with.",
        "status": "complete",
        "created": "2026-01-01T12:00:00",
        "updated": "2026-01-01T12:04:00",
        "seeds": [0, 1],
        "budget": {"epochs": 20, "train_samples": 5000, "batch_sizes": [32]},
        "learning_rate_policy": "same",
        "baseline": "no-dropout",
        "variants": [
            variant
            | {
                "name": "no-dropout",
                "spec": {"layers.1.rate": 0.0},
                "runs": run_names,
                "test_accuracy": summary(0.9512, 0.0021, [0.9491, 0.9533]),
            },
            variant
            | {
                "name": "dropout-0.5",
                "spec": {"layers.1.rate": 0.5},
                "runs": [],
                "test_accuracy": summary(0.9525, 0.003, [0.9495, 0.9555]),
            },
        ],
        "conclusion": [
            "Dropout 0.5 lowered the gap by 0.21 ± 0.03 (Welch t-test, p = 0.002).",
            "Test accuracy: no measurable difference (+0.1 points, p = 0.61).",
        ],
        "statistics": "Welch's t-test across seeds, two-sided, at the 5% level",
        "plots": ["loss.png"],
        "wall_seconds": 240.5,
    }
    ExperimentRecord.model_validate_json(json.dumps(data))
    (folder / "experiment.json").write_text(json.dumps(data | changes))
    plots.save_training_curves({"loss": [1.0, 0.5]}, folder / "loss.png")
    return folder


def test_an_experiment_report_holds_question_conclusion_table_plots_and_run_links(tmp_path):
    runs_dir = tmp_path / "runs"
    full_run(runs_dir / "r1")
    full_run(runs_dir / "r2")
    folder = experiment_folder(runs_dir, ["r1", "r2", "gone"])

    html = write_experiment_report(folder).read_text()
    page = assert_self_contained(html)
    text = " ".join(page.text)
    assert "Does dropout reduce overfitting on 5,000 digits?" in text
    assert "no measurable difference" in text and "Welch t-test" in text
    table = html.split('id="variants-table"')[1].split("</table>")[0]
    assert "95.12% ± 0.21%" in table and "94.91% 95.33%" in table and "3,125" in table
    assert "0.3000 ± 0.0200" in table and "30.75 ± 1.5" in table  # gap (a loss) and seconds
    assert "0.0100 ± 0.0020" in table and "0.3100 ± 0.0200" in table  # losses: 4 decimals
    assert "dropout-0.5" in table and "95.25% ± 0.30%" in table
    assert "Srivastava et al. 2014" in text and "Welch's t-test across seeds" in text
    assert "240.5" in text  # wall-clock seconds
    assert len(page.sources) == 1 and 'id="fig-loss-png"' in html
    # Links to the runs' reports, written now because they had none; a missing run: no link
    assert page.links[-2:] == ["../../r1/report.html", "../../r2/report.html"]
    for link in page.links[-2:]:
        assert (folder / link).resolve().is_file()
    assert "gone" in table and 'href="../../gone' not in html


def test_an_interrupted_experiment_report_says_how_to_resume(tmp_path):
    folder = experiment_folder(tmp_path, [], status="interrupted", conclusion=[])
    html = write_experiment_report(folder).read_text()
    assert "<strong>interrupted</strong>" in html and "--resume" in html
    assert "No conclusion yet." in html


def test_a_malformed_experiment_record_is_refused_in_one_line(tmp_path):
    """The report renders the typed record (experiments/record.py), so a record that isn't
    one is refused by its validation, never coerced into a page."""
    folder = tmp_path / "exp"
    folder.mkdir()
    record = {"name": "mine", "variants": [{"name": "v1", "test_accuracy": 0.9}, "v2"]}
    (folder / "experiment.json").write_text(json.dumps(record))
    with pytest.raises(RunError, match="experiment.json") as error:
        write_experiment_report(folder)
    assert "\n" not in str(error.value) and not (folder / "report.html").exists()
    result = invoke("report", folder, "--runs-dir", tmp_path)
    assert result.exit_code == 2 and result.output.startswith("Error: ")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [("{not json", "is not valid JSON"), ("[1, 2]", "must hold a JSON object")],
)
def test_an_unreadable_experiment_json_is_one_line(tmp_path, content, message):
    folder = experiment_folder(tmp_path, [])
    (folder / "experiment.json").write_text(content)
    with pytest.raises(RunError, match=message) as error:
        write_experiment_report(folder)
    assert "\n" not in str(error.value)


def test_report_finds_an_experiment_by_name_and_a_run_by_name(tmp_path):
    runs_dir = tmp_path / "runs"
    full_run(runs_dir / "r1")
    folder = experiment_folder(runs_dir, [])
    assert write_report(folder.name, runs_dir) == folder / "report.html"
    assert write_report("r1", runs_dir) == runs_dir / "r1" / "report.html"
    assert write_report("latest", runs_dir) == runs_dir / "r1" / "report.html"


# -------------------------------------------------------------------------------- compare
def test_compare_tables_only_the_fields_that_differ_then_the_results(tmp_path):
    a = read_run(full_run(tmp_path / "a", accuracy=0.91))
    b = read_run(full_run(tmp_path / "b", accuracy=0.95, train={"learning_rate": 0.01}))
    c = read_run(full_run(tmp_path / "c", accuracy=0.93, train={"batch_size": 128}))
    result = compare([a, b, c], tmp_path / "out")

    assert result.labels == ["a", "b", "c"]
    assert result.settings == [
        ("train.learning_rate", ["–", "0.01", "–"]),
        ("train.batch_size", ["32", "32", "128"]),
    ]
    assert [name for name, _ in result.results] == [
        "test accuracy", "test loss", "train seconds", "epochs"
    ]  # fmt: skip
    assert result.results[0][1] == ["91.00%", "95.00%", "93.00%"]
    assert result.png.read_bytes().startswith(PNG_MAGIC)
    html = result.html.read_text()
    assert_self_contained(html)
    assert "train.learning_rate" in html and "train.optimizer" not in html
    assert html.count("data:image/png;base64,") == 1


def test_compare_draws_one_panel_per_metric_one_colour_per_run(tmp_path):
    from digitlab.report.compare import _curves_figure

    runs = [read_run(full_run(tmp_path / name)) for name in "ab"]
    fig = _curves_figure(runs, ["a", "b"])
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["loss", "accuracy"]
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4  # 2 runs × (training, validation)
    assert {line.get_linestyle() for line in lines} == {"-", "--"}
    assert len({line.get_color() for line in lines}) == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dataset": "fashion-mnist"}, "runs on different datasets don't compare"),
        ({"train": {"metrics": ["accuracy", "precision"]}}, "runs with different metrics"),
    ],
)
def test_compare_refuses_runs_that_dont_compare(tmp_path, changes, message):
    a = read_run(full_run(tmp_path / "a"))
    b = read_run(full_run(tmp_path / "b", **changes))
    with pytest.raises(RunError, match=message):
        compare([a, b], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_compare_needs_two_different_runs(tmp_path):
    a = read_run(full_run(tmp_path / "a"))
    with pytest.raises(RunError, match="at least two runs"):
        compare([a], tmp_path / "out")
    with pytest.raises(RunError, match="given twice"):
        compare([a, read_run(tmp_path / "a")], tmp_path / "out")


# ------------------------------------------------------------------------------------- CLI
@pytest.mark.parametrize("command", ["report", "compare"])
def test_the_commands_answer_help_with_an_example(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0 and "Example" in result.output


def test_cli_compare_prints_the_table_and_writes_png_and_html(tmp_path):
    full_run(tmp_path / "a")
    full_run(tmp_path / "b", train={"batch_size": 128})
    result = invoke("compare", "a", "b", "--runs-dir", tmp_path, "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    assert re.search(r"train\.batch_size\s*│\s*32\s*│\s*128", result.output)
    assert re.search(r"test accuracy\s*│\s*90\.00%\s*│\s*90\.00%", result.output)
    assert (tmp_path / "cmp" / "compare.png").is_file()
    assert (tmp_path / "cmp" / "compare.html").is_file()


def test_cli_compare_writes_into_the_runs_folder_by_default(tmp_path):
    full_run(tmp_path / "a")
    full_run(tmp_path / "b")
    result = invoke("compare", "a", "b", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    [out] = tmp_path.glob("compare-*")
    assert (out / "compare.html").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "a", "fashion"], "Error: runs on different datasets don't compare"),
        (["compare", "a", "missing"], "Error: run 'missing' not found"),
        (["compare", "a", "broken"], "Error: "),
        (["report", "missing"], "Error: 'missing' is neither a run nor an experiment"),
        (["report", "broken"], "Error: "),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    full_run(tmp_path / "a")
    full_run(tmp_path / "fashion", dataset="fashion-mnist")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{")
    result = invoke(*args, "--runs-dir", tmp_path)
    assert result.exit_code == 2
    assert result.output.startswith(message) and result.output.count("\n") == 1
    assert "Traceback" not in result.output


def test_cli_report_rewrites_a_run_report(tmp_path):
    full_run(tmp_path / "a")
    result = invoke("report", "a", "--runs-dir", tmp_path)
    assert result.exit_code == 0, result.output
    assert f"wrote {tmp_path / 'a' / 'report.html'}" in result.output.replace("\n", "")
    assert "90.00%" in (tmp_path / "a" / "report.html").read_text()


@pytest.mark.slow
def test_training_writes_the_run_report(trained_run):
    html = (trained_run.path / "report.html").read_text()
    assert_self_contained(html)
    assert html.count("data:image/png;base64,") == 4  # curves, both confusions, mistakes
    assert f"{trained_run.metrics.test_accuracy:.2%}" in html


# -------------------------------------------------------------------------------- browser
@pytest.fixture
def pages_written(tmp_path):
    """A run report, an experiment report and a comparison, as files on disk."""
    runs_dir = tmp_path / "runs"
    a, b = full_run(runs_dir / "a"), full_run(runs_dir / "b", train={"batch_size": 128})
    experiment = experiment_folder(runs_dir, ["a", "b"])
    return {
        "run": write_run_report(a),
        "experiment": write_experiment_report(experiment),
        "compare": compare([read_run(a), read_run(b)], runs_dir / "cmp").html,
    }


def open_offline(browser, path: Path, width: int):
    """Load a page from disk; return it with its console errors and the URLs it requested."""
    context = browser.new_context(viewport={"width": width, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    requested: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("request", lambda request: requested.append(request.url))
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return context, page, errors, requested


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("width", [1024, 375])
@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("run", ["Per-class report", "Errors per true class", "train.batch_size"]),
        ("experiment", ["Does dropout reduce", "no measurable difference", "dropout-0.5"]),
        ("compare", ["train.batch_size", "test accuracy", "Training and validation curves"]),
    ],
)  # fmt: skip
def test_a_report_page_loads_offline_in_chromium(browser, pages_written, kind, expected, width):
    path = pages_written[kind]
    context, page, errors, requested = open_offline(browser, path, width)
    try:
        assert not errors, f"console errors: {errors}"
        outside = [url for url in requested if url != path.as_uri() and not url.startswith("data:")]
        assert not outside, f"the page fetched something else: {outside}"
        text = page.inner_text("body")
        for words in expected:
            assert words in text
        images = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
        assert images and all(w > 0 for w in images)  # every figure decoded from its data URI
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.slow
def test_an_experiment_report_links_to_its_runs_reports(browser, pages_written):
    context, page, errors, _ = open_offline(browser, pages_written["experiment"], 1024)
    try:
        with page.expect_navigation():
            page.click("#variants-table a:text-is('a')")
        assert page.url.endswith("/runs/a/report.html")
        assert "Run a" in page.inner_text("h1") and not errors
    finally:
        context.close()
