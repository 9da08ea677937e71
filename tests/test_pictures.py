"""Pictures that explain themselves (issue 23, item 4): every heatmap has a colour bar and
named axes, explain's output strip is labelled by class, no text runs off a figure or its
bar, the class templates are weighted by ink and say so, `explain` prints its verdict, run
reports inline the inspect pictures, and their numbers keep one format per quantity.

The figures are queried through matplotlib's artists (colour bars, axis labels, tick
labels, text extents), drawn with Agg, never shown."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from PIL import Image
from rich.console import Console
from runfiles import model_run
from test_report import full_run
from typer.testing import CliRunner

from digitlab import html, insight, plots
from digitlab.cli import app
from digitlab.experiments.plots import _activations_figure as experiment_activations
from digitlab.insight.explanation import _explanation_figure
from digitlab.insight.inspection import (
    _activations_figure,
    _class_inputs_figure,
    _weights_figure,
)
from digitlab.report import pages, write_run_report
from digitlab.runs import read_run, write_history

DIGITS = [str(d) for d in range(10)]
runner = CliRunner()


# --------------------------------------------------------------------------------- helpers
def colorbars(fig: Figure) -> list:
    return [ax._colorbar for ax in fig.axes if getattr(ax, "_colorbar", None) is not None]


def heatmap_axes(fig: Figure) -> list:
    """The axes that draw an image, colour bars left out."""
    return [
        ax
        for ax in fig.axes
        if getattr(ax, "_colorbar", None) is None
        and any(isinstance(a, AxesImage) for a in ax.get_children())
    ]


def assert_every_heatmap_has_a_colour_bar(fig: Figure) -> None:
    """Each heatmap's colour scale (its norm) is the scale of some colour bar on the figure."""
    norms = [bar.mappable.norm for bar in colorbars(fig)]
    for ax in heatmap_axes(fig):
        images = [a for a in ax.get_children() if isinstance(a, AxesImage)]
        assert any(any(im.norm is norm for norm in norms) for im in images), ax.get_title()


def rendered(fig: Figure):
    """Draw `fig` with Agg, as `save_figure` does; returns the renderer, for text extents."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def assert_no_text_runs_off(fig: Figure) -> None:
    """Everything drawn (titles, axis and tick labels, notes, colour bars) lies inside the
    figure: no text is cut off at its edge."""
    renderer = rendered(fig)
    box = fig.bbox
    drawn = [(ax.get_title() or ax.get_xlabel(), ax.get_tightbbox(renderer)) for ax in fig.axes]
    texts = [*fig.texts, *([fig._suptitle] if fig._suptitle is not None else [])]
    drawn += [(t.get_text(), t.get_window_extent(renderer)) for t in texts if t.get_text()]
    for name, extent in drawn:
        assert extent.x0 >= box.x0 - 1 and extent.x1 <= box.x1 + 1, name
        assert extent.y0 >= box.y0 - 1 and extent.y1 <= box.y1 + 1, name


def assert_no_panels_overlap(fig: Figure) -> None:
    """No two panels (each with its title, labels and tick labels; colour bars included)
    share any of the figure: a fixed layout leaves room for every label."""
    renderer = rendered(fig)
    boxes = [
        (ax.get_title() or ax.get_xlabel() or ax.get_ylabel(), ax.get_tightbbox(renderer))
        for ax in fig.axes
    ]
    for i, (name, box) in enumerate(boxes):
        for other, second in boxes[i + 1 :]:
            overlap_x = min(box.x1, second.x1) - max(box.x0, second.x0)
            overlap_y = min(box.y1, second.y1) - max(box.y0, second.y0)
            assert overlap_x <= 1 or overlap_y <= 1, f"{name!r} overlaps {other!r}"


def _explanation(top: list[float], layers: list[dict]) -> dict:
    rng = np.random.default_rng(0)
    order = np.argsort(-np.asarray(top + [0.0] * (10 - len(top))), kind="stable")[:3]
    probs = top + [0.0] * (10 - len(top))
    return {
        "top3": [{"digit": int(k), "label": str(k), "probability": probs[k]} for k in order],
        "target": int(order[0]),
        "method": "integrated",
        "saliency": rng.normal(size=(28, 28)).tolist(),
        "layers": layers,
    }


def _dense(name: str, values, activation: str = "relu") -> dict:
    values = list(values)
    return {
        "name": name,
        "type": "Dense",
        "activation": activation,
        "shape": [len(values)],
        "values": values,
    }


def _digit() -> np.ndarray:
    image = np.zeros((28, 28), np.uint8)
    image[5:23, 12:16] = 255
    return image


# ----------------------------------------------------------------------------- explain's
def test_the_explanation_labels_the_output_strip_by_class_and_has_colour_bars():
    probs = [0.7, 0.125, 0.1, 0.075]
    layers = [
        _dense("dense", np.linspace(0, 1, 100), "sigmoid"),
        _dense("dense_3", probs + [0.0] * 6, "softmax"),
    ]
    fig = _explanation_figure(_digit(), _explanation(probs, layers))
    assert_every_heatmap_has_a_colour_bar(fig)
    heatmaps = heatmap_axes(fig)
    assert len(heatmaps) == 4 and len(colorbars(fig)) == 4  # digit, saliency, two layers
    digit, saliency, hidden, output = heatmaps
    for ax in (digit, saliency):
        assert ax.get_xlabel() and ax.get_ylabel()
    assert hidden.get_xlabel() == "unit"
    assert output.get_xlabel() == "class"
    assert [t.get_text() for t in output.get_xticklabels()] == DIGITS
    bar_labels = [bar.ax.get_ylabel() for bar in colorbars(fig)]
    assert any("red" in label and "blue" in label for label in bar_labels)  # saliency's scale
    assert bar_labels.count("activation") == 2
    assert_no_text_runs_off(fig)
    assert_no_panels_overlap(fig)


def test_the_output_strip_takes_the_runs_class_names():
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat"]
    names += ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    explanation = _explanation([0.9, 0.1], [_dense("out", [0.9, 0.1] + [0.0] * 8, "softmax")])
    fig = _explanation_figure(_digit(), {**explanation, "class_names": names})
    output = heatmap_axes(fig)[-1]
    assert [t.get_text() for t in output.get_xticklabels()] == names
    assert_no_text_runs_off(fig)
    assert_no_panels_overlap(fig)


def test_a_short_top3_bar_keeps_its_probability_readable():
    """A 12.5% bar is too short to hold "12.5%": the label goes after it, in dark ink, not
    white text running off the bar onto the white axes."""
    probs = [0.775, 0.125, 0.1]
    fig = _explanation_figure(_digit(), _explanation(probs, [_dense("out", probs + [0] * 7)]))
    renderer = rendered(fig)
    (top3,) = [ax for ax in fig.axes if ax.get_title() == "top 3"]
    assert top3.get_xlabel() == "probability" and top3.get_ylabel() == "class"
    bars = {round(p.get_width(), 3): p.get_window_extent(renderer) for p in top3.patches}
    labels = {t.get_text(): t for t in top3.texts}
    assert set(labels) == {"77.5%", "12.5%", "10.0%"}
    for text, share in (("77.5%", 0.775), ("12.5%", 0.125), ("10.0%", 0.1)):
        label, bar = labels[text], bars[share]
        extent = label.get_window_extent(renderer)
        if label.get_color() == "white":
            assert bar.x0 <= extent.x0 and extent.x1 <= bar.x1, text  # inside its bar
        else:
            assert extent.x0 >= bar.x1, text  # after its bar, on the white
    assert labels["12.5%"].get_color() != "white"
    assert_no_text_runs_off(fig)


def test_conv_maps_are_labelled_by_channel():
    maps = np.random.default_rng(1).random((3, 12, 12)).tolist()
    conv = {"name": "conv", "type": "Conv2D", "activation": "relu", "shape": [24, 24, 16]}
    conv |= {"maps": maps, "channels": [5, 0, 9]}
    fig = _explanation_figure(_digit(), _explanation([1.0], [conv, _dense("out", [1.0] * 10)]))
    strip = heatmap_axes(fig)[2]
    assert [t.get_text() for t in strip.get_xticklabels()] == ["5", "0", "9"]
    assert "feature map" in strip.get_xlabel()
    assert_every_heatmap_has_a_colour_bar(fig)
    assert_no_text_runs_off(fig)
    assert_no_panels_overlap(fig)


# ----------------------------------------------------------------------------- inspect's
def test_the_weights_figure_has_a_colour_bar_and_named_axes():
    tiles = np.random.default_rng(0).normal(size=(20, 28, 28))
    fig = _weights_figure(tiles, "first-layer weights")
    assert_every_heatmap_has_a_colour_bar(fig)
    (ax,) = heatmap_axes(fig)
    assert "28×28" in ax.get_xlabel() and "units" in ax.get_ylabel()
    assert_no_text_runs_off(fig)


def test_the_activation_panels_name_both_axes():
    stats = [
        {
            "name": "dense",
            "activation": "sigmoid",
            "histogram": {"counts": [1, 2, 3], "edges": [0.0, 0.3, 0.6, 1.0]},
            "saturated_fraction": 0.2,
            "dead_fraction": None,
            "mean_per_unit_sorted": [0.9, 0.5, 0.1],
        }
    ]
    fig = _activations_figure(stats)
    for ax in fig.axes:
        assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title()
    assert_no_text_runs_off(fig)


def test_the_class_inputs_share_one_scale_per_row_with_its_colour_bar():
    rng = np.random.default_rng(0)
    averages = rng.random((10, 28, 28)) * 255
    templates = rng.normal(size=(10, 28, 28))
    templates[3] *= 10  # one class with larger values: still drawn on the shared scale
    fig = _class_inputs_figure(averages, templates, DIGITS, "template (blank: inked by < 1%)")
    assert len(colorbars(fig)) == 2
    assert_every_heatmap_has_a_colour_bar(fig)
    axes = heatmap_axes(fig)
    assert [ax.get_title() for ax in axes[:10]] == DIGITS
    assert axes[0].get_ylabel() == "average digit" and axes[10].get_ylabel() == "template"
    assert "inked by < 1%" in fig.get_suptitle()
    for ax in axes[10:]:  # each class at its own scale, on the shared −1…1 of the colour bar
        assert np.nanmax(np.abs(ax.get_images()[0].get_array())) == pytest.approx(1.0)
    assert_no_text_runs_off(fig)


class _LinearProbe:
    """A stand-in for `Probe`: a linear model whose class-logit gradient is `weights[class]`."""

    image_shape = (28, 28)

    def __init__(self, weights: np.ndarray):
        self.weights = weights

    def inputs(self, images):
        return images.reshape(len(images), -1).astype(np.float32) / 255

    def gradient(self, x, labels):
        return self.weights[labels]


def test_class_templates_weight_the_gradient_by_the_classs_ink():
    """A class's template is its average digit's ink (0–1) times the mean gradient of its
    logit, so a pixel the class doesn't ink says nothing whatever its weight; a pixel inked
    by under 1% of the digits is blank. (The plain gradient puts a network's largest values
    in border pixels no digit inks.)"""
    images = np.zeros((200, 28, 28), np.uint8)
    images[:, 14, 14] = 200  # every digit
    images[:4, 0, 5] = 51  # 2% of them: digits 0–3, one of each class 0–3's twenty
    images[:1, 0, 0] = 51  # 0.5% of them: digit 0
    weights = np.zeros((10, 784))
    weights[:, 0] = 100.0  # pixel (0, 0)
    weights[:, 5] = 100.0  # pixel (0, 5)
    weights[:, 14 * 28 + 14] = 1.0
    weights[:, 27 * 28 + 27] = 1000.0  # a corner no digit inks
    labels = np.arange(200) % 10
    probs = np.eye(10)[labels]
    averages, templates, how = insight.class_inputs(_LinearProbe(weights), images, labels, probs)
    np.testing.assert_allclose(averages[0, 0, 5], 51 / 20)
    assert np.isnan(templates[:, 0, 0]).all()  # inked by 0.5%: blank
    np.testing.assert_allclose(templates[:4, 0, 5], 100.0 * (51 / 20) / 255)
    np.testing.assert_allclose(templates[4:, 0, 5], 0.0)  # classes 4–9 never ink it
    np.testing.assert_allclose(templates[:, 14, 14], 200 / 255)
    assert np.isnan(templates[:, 27, 27]).all()
    assert "average digit's ink × the mean gradient" in how and "< 1%" in how
    # the shares can come from other digits (inspect passes the training digits')
    ink = np.full((28, 28), 0.5)
    _, templates, _ = insight.class_inputs(_LinearProbe(weights), images, labels, probs, ink=ink)
    np.testing.assert_allclose(templates[0, 0, 0], 100.0 * (51 / 20) / 255)
    np.testing.assert_allclose(templates[:, 27, 27], 0.0)


# ------------------------------------------------------------------------------- others
def test_training_curves_name_both_axes():
    fig = plots._curves_figure({"loss": [1.0, 0.5], "val_loss": [1.1, 0.7], "accuracy": [0.7, 0.8]})
    shown = [ax for ax in fig.axes if ax.lines]
    assert [(ax.get_xlabel(), ax.get_ylabel()) for ax in shown] == [
        ("epoch", "loss"),
        ("epoch", "accuracy"),
    ]


@pytest.mark.parametrize("draw", [plots._confusion_figure, plots._normalized_confusion_figure])
def test_confusion_heatmaps_have_colour_bars_and_named_axes(draw):
    cm = np.diag([980, 1130, 1000, 1000, 970, 880, 950, 1020, 960, 1000])
    cm[3, 5] = 12
    fig = draw(cm, DIGITS, title="Confusion matrix")
    assert_every_heatmap_has_a_colour_bar(fig)
    for ax in heatmap_axes(fig):
        assert ax.get_xlabel() == "Predicted label" and ax.get_ylabel() == "True label"
    assert_no_text_runs_off(fig)


def test_the_normalization_legend_tells_every_percentile_apart():
    stats = {
        "p15": [-1.0, -0.5],
        "p50": [0.0, 0.1],
        "p85": [1.0, 0.9],
        "saturated": [0.5, 0.3],
    }
    variants = [{"name": "sigmoid", "activations": {"run-0": {"1 sigmoid": stats}}}]
    fig = experiment_activations(variants)
    legend = fig.legends[0]
    styles = {
        text.get_text(): line.get_linestyle()
        for text, line in zip(legend.get_texts(), legend.get_lines(), strict=True)
    }
    percentiles = [f"pre-activation {p}" for p in ("15th percentile", "median", "85th percentile")]
    assert set(percentiles) <= set(styles), styles
    assert len({styles[p] for p in percentiles}) == 3, styles


# ------------------------------------------------------------------------------ reports
def test_report_numbers_keep_one_format_per_quantity(tmp_path):
    """Accuracy and the other shares of digits as percentages with 2 decimals, counts as
    whole numbers, losses with 4 decimals: no 1e+04, no 0.985 beside 0.9818, no final
    val_accuracy 0.978 beside a test accuracy of 97.79%."""
    path = full_run(tmp_path / "run", accuracy=0.9779)
    metrics = json.loads((path / "metrics.json").read_text())
    report = metrics["classification_report"]
    report["3"] = {"precision": 0.985, "recall": 0.9818, "f1-score": 0.98339, "support": 1010}
    report["macro avg"] = {"precision": 0.9, "recall": 0.8, "f1-score": 0.85, "support": 10000.0}
    (path / "metrics.json").write_text(json.dumps(metrics))
    history = {"loss": [1.0, 0.085], "accuracy": [0.7, 0.98], "val_loss": [1.1, 0.0912]}
    write_history(path / "history.csv", history | {"val_accuracy": [0.6, 0.978]})
    page = write_run_report(read_run(path)).read_text()
    assert "1e+04" not in page and "10,000" in page and "1,010" in page
    assert "98.50%" in page and "98.18%" in page and "98.34%" in page
    assert ">0.985<" not in page and ">0.9818<" not in page
    summary = page.split('id="metrics"')[1].split("</table>")[0]
    assert "97.79%" in summary and "97.80%" in summary and "0.978<" not in summary
    assert "0.0850" in summary and "0.0912" in summary and "0.3125" in summary


def test_number_formats():
    assert html.number(10000.0) == "10,000" and html.number(12) == "12"
    assert html.number(0.98765) == "0.9877"
    assert html.fixed(0.085) == "0.0850" and html.fixed(None) == "–"
    assert html.metric("val_accuracy", 0.978) == "97.80%"
    assert html.metric("precision", 0.985) == "98.50%"
    assert html.metric("val_loss", 0.0912) == "0.0912"
    assert html.metric("loss", 1.0) == "1.0000"


def test_inspect_picture_names_are_the_ones_inspect_writes():
    names = [name for name, _, _ in pages.INSPECT_PICTURES]
    from digitlab.insight import recording

    assert names == [
        insight.WEIGHTS_PNG, insight.ACTIVATIONS_PNG, insight.CLASS_INPUTS_PNG,
        recording.HISTOGRAMS_PNG, recording.SIGNALS_PNG,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def untrained_run(tmp_path_factory, mnist):
    """An untrained seed network in a run folder, opened once: its compiled probe is shared."""
    return read_run(model_run(tmp_path_factory.mktemp("runs") / "untrained"))


def test_a_run_report_inlines_the_inspect_pictures(untrained_run):
    page = write_run_report(untrained_run).read_text()
    assert 'id="fig-weights-png"' not in page
    insight.inspect(untrained_run, count=100)  # rewrites the run's report.html
    page = (untrained_run.path / "report.html").read_text()
    for name in ("weights", "activations", "class_inputs"):
        assert f'id="fig-{name}-png"' in page, name
    inside = page.split('id="inspect"')[1]
    assert inside.index('id="inspect-stats"') < inside.index('id="fig-weights-png"')
    assert "inked by under 1%" in page  # the templates' caption says how they are drawn
    record = json.loads((untrained_run.path / "inspect" / "inspect.json").read_text())
    assert "average digit's ink × the mean gradient" in record["templates"]


def _printed(explained) -> str:
    console = Console(record=True, width=200)
    explained.print(console)
    return console.export_text()


def test_explain_gives_the_verdict_predict_gives(untrained_run, mnist, tmp_path):
    """Without thresholds, the verdict says how to get them; with them, it is the one
    `predict` gives the same digit (thresholds set to force each answer), printed in words
    and in `--json` as `confidence`, `confident`, `reason`."""
    from digitlab.confidence import MARGIN, RESIDUAL, fit_stats, verdicts

    run, choice, digit = untrained_run, insight.DigitChoice(index=0), mnist[1][0][:1]
    explained = insight.explain_digit(run, choice, out=tmp_path / "a.png")
    assert explained.verdict["confident"] is None
    assert "verdict: – (the run has no confidence thresholds: digitlab calibrate" in _printed(
        explained
    )
    stats = fit_stats(mnist[0][0][:2000], mnist[0][1][:2000], len(run.class_names))
    for thresholds, words in (
        ({MARGIN: 1.01, RESIDUAL: 1e9}, "not confident (unsure)"),
        ({MARGIN: 0.0, RESIDUAL: 0.0}, "not confident (not a digit)"),
        ({MARGIN: 0.0, RESIDUAL: 1e9}, "confident"),
    ):
        run.store_calibration(thresholds, stats)
        explained = insight.explain_digit(run, choice, out=tmp_path / "b.png")
        expected = verdicts(run, digit, run.predict_proba(digit))[0]
        assert explained.verdict["confident"] == expected["confident"]
        assert explained.verdict["reason"] == expected["reason"]
        assert explained.verdict["confidence"] == pytest.approx(expected["confidence"], abs=1e-5)
        assert f"verdict: {words}\n" in _printed(explained)
        data = explained.to_dict()
        assert (data["confident"], data["reason"]) == (expected["confident"], expected["reason"])
    # the terminal shows it: `digitlab explain` prints the verdict after the top 3
    out = tmp_path / "c.png"
    result = runner.invoke(app, ["explain", str(run.path), "--index", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.index("probability") < result.output.index("verdict: confident\n")


# ------------------------------------------------------------------------- drawing page
ACCENT = np.array([47, 111, 223])  # the page's --accent blue: the answer and its bar


def _accent_pixels(png: bytes) -> int:
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    return int((np.abs(rgb - ACCENT).sum(axis=2) < 60).sum())


@pytest.mark.browser
@pytest.mark.slow
def test_the_empty_drawing_page_shows_nothing_where_the_answer_goes(untrained_run, browser):
    """Before a digit is drawn, and after Clear, the answer's card holds no blue mark (the
    "–" placeholder drew one, where "what the model sees" goes) and no empty figures; once
    drawn, the answer, its bar and what the model sees appear."""
    from browser import served
    from test_web import draw_strokes

    from digitlab.api import create_app

    with served(create_app(untrained_run)) as base:
        context = browser.new_context(viewport={"width": 1024, "height": 800})
        page = context.new_page()
        page.goto(base)
        page.wait_for_selector("#model-info:has-text('run ')")
        card = page.locator("section[aria-labelledby=result-title]")
        figures = ("#digit", "figure.seen", "figure.overlay")
        assert _accent_pixels(card.screenshot()) == 0
        assert not any(page.locator(selector).is_visible() for selector in figures)
        draw_strokes(page, [[(80, 50), (200, 50), (150, 140), (115, 240)]])
        page.wait_for_function("!document.querySelector('figure.overlay').hidden", timeout=20_000)
        assert all(page.locator(selector).is_visible() for selector in figures)
        assert _accent_pixels(card.screenshot()) > 50
        page.click("#clear")
        assert _accent_pixels(card.screenshot()) == 0
        assert not any(page.locator(selector).is_visible() for selector in figures)
        assert page.locator("#digit").text_content() == "–"
        context.close()
