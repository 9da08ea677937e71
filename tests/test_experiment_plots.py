"""The experiment figures show what the conclusions claim (issue 20, section 3).

Synthetic variants, curves and tests (no training): each figure is drawn, then read back from
its artists — axis labels, limits, the band's width against a t interval computed here, the
forest's rows and margins, the censored markers.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.patches import Rectangle
from matplotlib.transforms import Bbox
from scipy import stats

from digitlab.experiments import figures_common as common
from digitlab.experiments import figures_forest as forest
from digitlab.experiments import figures_mechanisms, plots
from digitlab.experiments import figures_summary as summary
from digitlab.experiments.schema import Definition

FIT = 4000  # digits per epoch in the synthetic runs
EPOCHS = 6


# ---------------------------------------------------------------------------- synthetic data
def _summary(values, missing: int = 0) -> dict:
    values = [float(v) for v in values]
    return {
        "mean": float(np.mean(values)) if values else None,
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if values else None),
        "values": values,
        "missing": missing,
    }


def make_curve(seed: int, level: float, batch: int = 32, dropout: bool = True) -> dict:
    """One run's per-epoch history: losses falling towards `level`, accuracies rising."""
    rng = np.random.default_rng(seed)
    epochs = np.arange(1, EPOCHS + 1)
    val_loss = level + 0.8 / epochs + rng.normal(0, 0.02, EPOCHS)
    train_loss = val_loss - 0.05 * epochs / EPOCHS
    curve = {
        "loss": list(train_loss + (0.1 if dropout else 0.0)),
        "accuracy": list(0.90 + 0.01 * epochs - 0.02 + rng.normal(0, 0.002, EPOCHS)),
        "val_loss": list(val_loss),
        "val_accuracy": list(0.88 + 0.012 * epochs + rng.normal(0, 0.003, EPOCHS)),
        "epoch_seconds": [0.5 + 0.001 * batch] * EPOCHS,
        "updates_per_epoch": math.ceil(FIT / batch),
        "examples_per_epoch": FIT,
    }
    if dropout:  # the runs measured with dropout off too
        curve["inference_loss"] = list(train_loss - 0.02)
        curve["inference_accuracy"] = list(0.91 + 0.011 * epochs + rng.normal(0, 0.002, EPOCHS))
    return curve


def make_variant(name: str, batch: int = 32, seeds: int = 3, accuracy: float = 0.97, **more):
    rng = np.random.default_rng(len(name) + batch)
    values = accuracy + rng.normal(0, 0.002, seeds)
    return {
        "name": name,
        "batch_size": batch,
        "learning_rate": 0.01,
        "updates": math.ceil(FIT / batch) * EPOCHS,
        "test_accuracy": _summary(values),
        "generalization_gap": _summary(0.05 + rng.normal(0, 0.01, seeds)),
        "activations": {},
        **more,
    }


def dropout_data(seeds: int = 3):
    names = ("no-dropout", "dropout-0.2", "dropout-0.5")
    variants = [
        make_variant(n, seeds=seeds, accuracy=0.97 + 0.002 * i) for i, n in enumerate(names)
    ]
    curves = {n: [make_curve(10 * i + s, 0.1 + 0.02 * i) for s in range(seeds)]
              for i, n in enumerate(names)}  # fmt: skip
    return variants, curves


BATCHES = {"batch-1": 1, "batch-32": 32, "batch-128": 128, "batch-1024": 1024, "full": FIT}


def batch_data():
    """Five batch sizes: steps to target falling with the batch, examples rising; batch-1024
    reached the target with 2 of 3 seeds, full batch with none."""
    variants, curves = [], {}
    for i, (name, batch) in enumerate(BATCHES.items()):
        steps = 3000.0 / batch**0.8 + 20
        reached = {"batch-1024": 2, "full": 0}.get(name, 3)
        values = [steps * (1 + 0.05 * k) for k in range(reached)]
        grid = [
            {"learning_rate": r, "val_accuracy": 0.6 + 0.3 * (r == 0.1) - 0.1 * i * (r < 0.05),
             "diverged": False}
            for r in (0.01, 0.03, 0.1, 0.3)
        ] + [{"learning_rate": 1.0, "val_accuracy": None, "diverged": True}]  # fmt: skip
        variants.append(
            make_variant(
                name,
                batch=batch,
                accuracy=0.95 - 0.01 * i,
                learning_rate_grid=grid,
                updates_to_target=_summary(values, 3 - reached),
                examples_to_target=_summary([v * batch for v in values], 3 - reached),
            )
        )
        variants[-1]["learning_rate"] = 0.1
        per_epoch = math.ceil(FIT / batch)
        epochs = max(EPOCHS, math.ceil(300 / per_epoch))  # min_updates = 300
        variants[-1].update(updates=per_epoch * epochs, epochs=epochs)
        if name == "full":
            variants[-1]["spec"] = {"full_batch": True}
        curves[name] = [make_curve(s, 0.2, batch, dropout=False) for s in range(3)]
    return variants, curves


def make_tests() -> list[dict]:
    """Two claims (one interaction) and three comparisons on two metrics, one not tested."""

    def test(metric, variants, estimate, half, margin, verdict, **more):
        return {
            "metric": metric, "variants": variants, "estimate": estimate,
            "low": None if estimate is None else estimate - half,
            "high": None if estimate is None else estimate + half,
            "level": 0.99, "margin": margin, "verdict": verdict, "sentence": "", **more,
        }  # fmt: skip

    return [
        test("generalization_gap", ["dropout-0.2", "no-dropout"], -0.01, 0.012, 0.02, "equivalent"),
        test("test_accuracy", ["dropout-0.5", "no-dropout"], 0.004, 0.003, 0.005, "higher"),
        test(
            "test_accuracy",
            ["dropout-0.2", "no-dropout"],
            None,
            0,
            0.005,
            "not tested",
            sentence="one seed",
        ),
        test(
            "test_accuracy",
            ["dropout-0.5", "no-dropout", "dropout-0.2", "no-dropout"],
            0.001,
            0.009,
            0.0035,
            "inconclusive",
            name="interaction",
            expect="higher",
            statement="dropout helps more",
        ),
        test(
            "generalization_gap",
            ["dropout-0.5", "no-dropout"],
            -0.06,
            0.02,
            0.02,
            "lower",
            name="gap-narrower",
            expect="lower",
            statement="dropout narrows the gap",
        ),
    ]


def definition(plots_: tuple[str, ...], variants: list[dict]) -> Definition:
    return Definition.model_validate(
        {
            "name": "synthetic",
            "question": "?",
            "budget": {"epochs": EPOCHS, "train_samples": 500},
            "plots": plots_,
            "variants": [{"name": v["name"]} for v in variants],
        }
    )


def rendered(fig) -> None:
    FigureCanvasAgg(fig).draw()


def band_edges(band: PolyCollection, xs) -> tuple[np.ndarray, np.ndarray]:
    """The lower and upper edge of a `fill_between` band at each x."""
    vertices = band.get_paths()[0].vertices
    at = [vertices[np.isclose(vertices[:, 0], x), 1] for x in xs]
    return np.array([v.min() for v in at]), np.array([v.max() for v in at])


def all_axes(fig) -> list:
    """The figure's axes and their insets (the panels holding 0 under a broken axis)."""
    return [a for ax in fig.axes for a in (ax, *ax.child_axes)]


def break_marks(fig) -> list:
    return [line for ax in all_axes(fig) for line in ax.lines if line.get_gid() == common.BREAK_GID]


def assert_accuracy_axis_is_honest(ax, fig) -> None:
    """Either the axis spans 0–100% or the figure draws break marks and a panel holding 0."""
    low, high = ax.get_ylim()
    if low <= 0 and high >= 100:
        return
    assert break_marks(fig), f"truncated accuracy axis {ax.get_ylim()} without a break"
    zero_panels = [a for a in ax.child_axes if a.get_ylim()[0] == 0
                   and a.get_shared_x_axes().joined(a, ax)]  # fmt: skip
    assert zero_panels, "a broken axis has a panel holding 0 under it"
    assert not any(t.get_visible() for t in ax.get_xticklabels()), "the break hides the top's"


def panel_titled(fig, start: str):
    return next(ax for ax in fig.axes if ax.get_title().startswith(start))


# ----------------------------------------------------------------------------------- tests
def test_draw_writes_every_named_figure(tmp_path):
    variants, curves = batch_data()
    every = ("loss", "gap", "accuracy", "updates", "seconds", "to-target", "learning-rates",
             "forest")  # fmt: skip
    paths = plots.draw(tmp_path, definition(every, variants), variants, curves, make_tests(),
                       target=0.9)  # fmt: skip
    names = sorted(p.name for p in paths)
    assert names == sorted([
        "loss.png", "clocks.png", "accuracy.png", "test_accuracy.png", "gap.png",
        "to_target.png", "learning_rates.png", "forest.png",
    ])  # fmt: skip
    for path in paths:
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def test_draw_without_tests_leaves_the_forest_out(tmp_path):
    """The four-argument call the runner makes today still works."""
    variants, curves = dropout_data()
    paths = plots.draw(tmp_path, definition(("loss", "forest"), variants), variants, curves)
    assert [p.name for p in paths] == ["loss.png"]


def test_draw_adds_the_recorded_mechanisms_and_a_damaged_record_costs_only_its_pictures(
    tmp_path,
):
    variants, curves = dropout_data()
    named = definition(("loss",), variants)
    recorded = {"no-dropout": _recording(1.0), "dropout": _recording(2.0, "relu")}
    paths = plots.draw(tmp_path / "good", named, variants, curves, recorded=recorded)
    assert [p.name for p in paths] == ["loss.png", "mechanisms.png", "activation_histograms.png"]
    damaged = {"no-dropout": {**_recording(1.0), "gradient_norms": {"dense": "high"}}}
    paths = plots.draw(tmp_path / "bad", named, variants, curves, recorded=damaged)
    names = [p.name for p in paths]  # the experiment's figures all there, the damaged one not
    assert "loss.png" in names and "mechanisms.png" not in names


def test_the_loss_band_is_the_t_interval_of_the_mean():
    _, curves = dropout_data(seeds=3)
    fig = plots._loss_figure(curves)
    ax = panel_titled(fig, "no-dropout")
    runs = np.array([c["val_loss"] for c in curves["no-dropout"]])
    half = stats.t.ppf(0.975, 2) * runs.std(axis=0, ddof=1) / np.sqrt(3)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    low, high = band_edges(bands[1], np.arange(1, EPOCHS + 1))  # training's is first
    np.testing.assert_allclose(high, runs.mean(axis=0) + half, rtol=1e-9)
    np.testing.assert_allclose(low, runs.mean(axis=0) - half, rtol=1e-9)
    assert ax.get_xlabel() == "epoch" and "loss" in fig.axes[0].get_ylabel()
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert labels == {"training (dropout off)", "validation"}


def test_keras_training_loss_is_labelled_dropout_on_when_no_inference_loss_was_recorded():
    curves = {"a": [make_curve(s, 0.1) for s in range(2)]}
    for c in curves["a"]:
        del c["inference_loss"]
    fig = plots._loss_figure(curves)
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert "training (Keras's, dropout on)" in labels
    training = fig.axes[0].lines[0]
    np.testing.assert_allclose(training.get_ydata(), np.mean([c["loss"] for c in curves["a"]], 0))


def test_one_seed_draws_no_band_and_says_so():
    _, curves = dropout_data(seeds=1)
    fig = plots._loss_figure(curves)
    assert not [c for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]
    assert "one seed: no band" in fig.get_suptitle()


def test_accuracy_curves_show_training_dropout_off_and_validation_on_an_honest_axis():
    _, curves = dropout_data()
    fig = plots._accuracy_curves_figure(curves)
    ax = panel_titled(fig, "dropout-0.5")
    labels = {t.get_text() for t in fig.legends[0].get_texts()}
    assert labels == {"training (dropout off)", "validation"}
    curves_drawn = [line for line in ax.lines if line.get_gid() != common.BREAK_GID]
    np.testing.assert_allclose(
        curves_drawn[0].get_ydata(),
        100 * np.mean([c["inference_accuracy"] for c in curves["dropout-0.5"]], axis=0),
    )
    assert_accuracy_axis_is_honest(ax, fig)
    assert break_marks(fig), "accuracies near 95% are drawn on a broken axis"


def test_accuracy_far_from_the_top_gets_the_full_axis():
    _, curves = dropout_data()
    for runs in curves.values():
        for c in runs:
            c["val_accuracy"] = [0.1, *c["val_accuracy"][1:]]  # near chance after epoch 1
    fig = plots._accuracy_curves_figure(curves)
    assert not break_marks(fig)
    assert fig.axes[0].get_ylim() == (0.0, 100.0)


def test_test_accuracy_points_carry_t_whiskers_on_an_honest_axis():
    variants, _ = dropout_data(seeds=4)
    fig = summary.test_accuracy_figure(variants)
    ax = next(a for a in fig.axes if a.get_ylabel() == "test accuracy (%)")
    assert_accuracy_axis_is_honest(ax, fig)
    values = 100 * np.array(variants[1]["test_accuracy"]["values"])
    half = stats.t.ppf(0.975, 3) * values.std(ddof=1) / 2
    whiskers = [c for c in ax.collections if c.get_segments()]
    segment = whiskers[1].get_segments()[0]
    np.testing.assert_allclose(sorted(segment[:, 1]), [values.mean() - half, values.mean() + half])
    bottom = ax.child_axes[0] if ax.child_axes else ax
    assert [t.get_text() for t in bottom.get_xticklabels()] == [v["name"] for v in variants]
    assert bottom.get_xlabel() == "variant"


def test_gap_figure_has_units_and_a_zero_line():
    variants, _ = dropout_data()
    fig = summary.gap_figure(variants)
    ax = fig.axes[0]
    assert "validation − training loss" in ax.get_ylabel()
    assert any(list(line.get_ydata()) == [0, 0] for line in ax.lines)


def test_forest_has_one_row_per_test_with_its_interval_and_margin():
    tests = make_tests()
    listed = forest.listed_tests(tests)
    assert [t.get("name") for t in listed[:2]] == ["interaction", "gap-narrower"]  # claims first
    fig = forest.forest_figure(listed)
    accuracy, loss = fig.axes  # one panel per unit, in order of the first (claim) row
    assert "percentage points" in accuracy.get_xlabel() and "loss" in loss.get_xlabel()
    assert len(accuracy.get_yticks()) == 3 and len(loss.get_yticks()) == 2
    assert accuracy.get_yticklabels()[0].get_text().startswith("interaction (claim")
    intervals = [line for line in accuracy.lines if line.get_gid() == forest.INTERVAL_GID]
    interaction = next(t for t in tests if t.get("name") == "interaction")
    np.testing.assert_allclose(
        intervals[0].get_xdata(), [100 * interaction["low"], 100 * interaction["high"]]
    )
    margins = [p for p in accuracy.patches if isinstance(p, Rectangle)
               and p.get_gid() == forest.MARGIN_GID]  # fmt: skip
    assert len(margins) == 3
    assert margins[0].get_x() == pytest.approx(-100 * interaction["margin"])
    assert margins[0].get_width() == pytest.approx(200 * interaction["margin"])
    untested = [t.get_text() for t in accuracy.texts]
    assert untested == ["not tested: one seed"]
    assert any(list(line.get_xdata()) == [0, 0] for line in accuracy.lines)  # the zero line
    legend = {t.get_text() for t in fig.legends[0].get_texts()}
    assert {forest.VERDICTS[v][1] for v in ("higher", "lower", "equivalent")} <= legend
    assert "99.00%" in fig.get_suptitle()


def test_forest_takes_a_judgement_or_models():
    class Judgement:
        def __init__(self, tests):
            self.claims = [t for t in tests if t.get("name")]
            self.tests = [t for t in tests if not t.get("name")]

    listed = forest.listed_tests(Judgement(make_tests()))
    assert [t.get("name") for t in listed] == ["interaction", "gap-narrower", None, None, None]


def test_to_target_is_log_log_with_censored_markers_and_ideal_scaling():
    variants, curves = batch_data()
    fig = summary.to_target_figure(variants, curves, 0.9)
    steps, _ = fig.axes
    assert steps.get_xscale() == "log" and steps.get_yscale() == "log"
    assert "batch size" in steps.get_xlabel() and "updates" in steps.get_ylabel()
    censored = [line for line in steps.lines if line.get_gid() == summary.CENSORED_GID]
    full = next(v for v in variants if v["name"] == "full")
    assert sorted(line.get_xdata()[0] for line in censored) == [1024, FIT]
    at_full = next(line for line in censored if line.get_xdata()[0] == FIT)
    assert at_full.get_ydata()[0] == full["updates"] and at_full.get_markerfacecolor() in (
        "white", (1.0, 1.0, 1.0, 1.0))  # fmt: skip
    ideal = next(line for line in steps.lines if "1/B" in line.get_label())
    first = variants[0]["updates_to_target"]["mean"]
    np.testing.assert_allclose(ideal.get_ydata(), first / ideal.get_xdata())
    assert "never reached" in " ".join(t.get_text() for t in fig.legends[0].get_texts())
    assert "90%" in steps.get_title()


def test_learning_rate_grids_mark_the_chosen_and_the_diverged_rates():
    variants, _ = batch_data()
    fig = summary.learning_rates_figure(variants)
    ax = next(a for a in fig.axes if a.get_ylabel())
    assert ax.get_xscale() == "log"
    assert_accuracy_axis_is_honest(ax, fig)
    chosen = [line for line in ax.lines if line.get_gid() == summary.CHOSEN_GID]
    assert [line.get_xdata()[0] for line in chosen] == [0.1] * len(variants)
    crosses = [line for a in all_axes(fig) for line in a.lines if line.get_marker() == "x"]
    assert [line.get_xdata()[0] for line in crosses] == [1.0] * len(variants)


def test_activations_legend_names_percentiles_and_fractions():
    stats_ = {"p15": [-1.0, -0.5], "p50": [0.0, 0.1], "p85": [1.0, 0.9], "saturated": [0.5, 0.3]}
    variants = [{"name": "sigmoid", "activations": {"run-0": {"1 sigmoid": stats_}}}]
    fig = plots._activations_figure(variants)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [
        "pre-activation 15th percentile",
        "pre-activation median",
        "pre-activation 85th percentile",
        "saturated fraction (right axis)",
    ]
    assert fig.axes[0].get_title() == "sigmoid: layer 1 (sigmoid)"


@pytest.mark.parametrize(
    "make",
    [
        lambda: plots._loss_figure(batch_data()[1]),
        lambda: plots._clocks_figure(batch_data()[1], ["epoch", "updates", "seconds"]),
        lambda: plots._accuracy_curves_figure(batch_data()[1]),
        lambda: summary.to_target_figure(*batch_data(), 0.9),
        lambda: forest.forest_figure(forest.listed_tests(make_tests())),
    ],
    ids=["loss", "clocks", "accuracy", "to-target", "forest"],
)
def test_every_figure_fits_a_page_and_labels_its_axes(make):
    fig = make()
    assert fig.get_figwidth() <= common.WIDTH
    rendered(fig)
    box = fig.bbox
    for ax in fig.axes:
        extent = ax.get_tightbbox()
        assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, ax.get_title()
        assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, ax.get_title()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        assert not ticks or ax.get_xlabel(), f"x axis without a label: {ax.get_title()}"
    assert fig.axes[0].get_ylabel() or fig.axes[0].get_yticklabels()  # forest: rows named


def test_forest_reads_the_record_models():
    """The runner passes the record's `ClaimResult` and `Test` models, not dicts."""
    from digitlab.experiments.schema import ClaimResult, Test

    claim = next(t for t in make_tests() if t.get("name") == "gap-narrower")
    models = [
        *[Test.model_validate(t) for t in make_tests() if not t.get("name")],
        ClaimResult.model_validate({**claim, "anchor": "", "literature": "agrees"}),
    ]
    listed = forest.listed_tests(models)
    assert listed[0]["name"] == "gap-narrower" and len(listed) == 4
    fig = forest.forest_figure(listed)
    assert sum(len(ax.get_yticks()) for ax in fig.axes) == 4


def test_close_batch_sizes_get_labels_that_do_not_overlap():
    variants, curves = batch_data()
    variants[-1].update(batch_size=1250, spec={})  # just above 1,024
    fig = summary.to_target_figure(variants, curves, 0.9)
    rendered(fig)
    labels = [label for label in fig.axes[0].get_xticklabels() if label.get_text()]
    assert labels[-1].get_text() == "\n1,250"  # dropped a line below 1,024

    def ink(label):  # the box of its one written line (a dropped label starts with "\n")
        box, lines = label.get_window_extent(), label.get_text().count("\n") + 1
        return Bbox.from_extents(box.x0, box.y0, box.x1, box.y0 + box.height / lines)

    for a, b in itertools.pairwise(labels):
        assert not ink(a).overlaps(ink(b)), [a.get_text(), b.get_text()]


# ---------------------------------------------------------------------- inside the networks
def _recording(scale: float, kind: str = "sigmoid") -> dict:
    """A recorder's record (mechanisms.json) of a 2-epoch run with one hidden layer."""
    share = {"saturated": [0.1 * scale, 0.2, 0.3]} if kind == "sigmoid" else {"dead": [0, 0.1, 0.2]}
    return {
        "epochs": [0, 1, 2],
        "gradient_norms": {"dense": [scale, scale / 2, scale / 4], "dense_1": [1.0, 1.0, 1.0]},
        "update_ratios": {"dense": [1e-2, 1e-3, 1e-4], "dense_1": [1.0, 1.0, 1.0]},
        "activations": {
            "dense": {
                "activation": kind,
                "edges": [0.0, 0.5, 1.0],
                **share,
                "counts": [[5, 1], [3, 3], [1, 5]],
            },
        },
        "noise_scale": {"epochs": [0, 2], "simple": [100.0 * scale, None], "error": [5.0, None]},
    }


def test_the_mechanisms_figure_draws_each_variants_first_layer_over_epochs():
    recorded = {"sigmoid": _recording(1.0), "relu": _recording(3.0, "relu")}
    fig = figures_mechanisms.mechanisms_figure(recorded)
    grad, ratio, share, noise = fig.axes[:4]
    assert [ax.get_yscale() for ax in (grad, ratio, noise)] == ["log"] * 3
    first = grad.get_lines()[0]  # the first layer's, not dense_1's
    assert list(first.get_ydata()) == [1.0, 0.5, 0.25] and len(grad.get_lines()) == 2
    assert any(list(line.get_ydata()) == [1e-3, 1e-3] for line in ratio.get_lines())  # the rule
    shares = [list(line.get_ydata()) for line in share.get_lines()]
    assert [10.0, 20.0, 30.0] in [[round(v, 6) for v in s] for s in shares]  # saturated, in %
    assert [0.0, 10.0, 20.0] in [[round(v, 6) for v in s] for s in shares]  # relu: dead units
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in (grad, ratio, share, noise))
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["sigmoid", "relu"]


def test_the_activation_histograms_figure_has_one_panel_per_variant_and_a_scale():
    recorded = {name: _recording(1.0) for name in ("a", "b", "c", "d", "e")}
    fig = figures_mechanisms.histograms_figure(recorded)
    panels = [ax for ax in fig.axes if ax.collections and ax.get_title()]  # no colour bar
    assert [ax.get_title() for ax in panels] == [f"{n}: layer 1 (sigmoid)" for n in "abcde"]
    mesh = panels[0].collections[0]
    assert mesh.get_array().size == 2 * 3  # 2 bins × 3 epochs
    assert any(ax.get_ylabel() == "count (log)" for ax in fig.axes)  # its colour bar
    assert sum(not ax.axison for ax in fig.axes) == 3  # 8 cells, 5 panels
