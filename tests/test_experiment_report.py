"""An experiment's report reads as a lesson (issue 20, item 4): the question, the answer in
plain words, a figure, the claims, the variants as short diffs, "How we know" last; it fits
1,000 px and a 400 px phone in Chromium without scrolling sideways; a smoke run says so; p is
never "0.000"; and records written before claims existed still render. Also what
`digitlab experiment` prints in the terminal (experiments/views.py)."""

from __future__ import annotations

import json
from html import unescape
from pathlib import Path

import pytest
from PIL import Image

from digitlab.experiments.record import write_record
from digitlab.experiments.schema import ExperimentRecord
from digitlab.presets import get_preset
from digitlab.report import lesson, write_experiment_report

SEED_LAYERS = [dict(layer) for layer in get_preset("seed").layers]  # 100 sig/relu/relu, 0.2


def layers(units: int = 100, rate: float | None = 0.2) -> list[dict]:
    """The seed preset's layers with every hidden width and every dropout rate changed; no
    Dropout layers for rate None."""
    out = []
    for layer in SEED_LAYERS:
        if layer["type"] == "Dropout":
            if rate is not None:
                out.append({"type": "Dropout", "rate": rate})
        elif layer["units"] != 10:
            out.append(layer | {"units": units})
        else:
            out.append(layer)
    return out


def summary(mean, std=0.01, n=10, missing=0):
    return {"mean": mean, "std": std, "values": [mean + std * (i - n / 2) / n for i in range(n)],
            "missing": missing}  # fmt: skip


def variant(name: str, spec: dict, **changes) -> dict:
    seeds = list(range(10))
    return {
        "name": name,
        "description": f"the {name} variant",
        "spec": spec,
        "runs": [f"{name}-seed{seed}" for seed in seeds],
        "seeds": seeds,
        "batch_size": 32,
        "learning_rate": None,
        "test_accuracy": summary(0.9512, 0.0021),
        "final_train_loss": summary(0.0123, 0.002),
        "final_val_loss": summary(0.3123, 0.02),
        "generalization_gap": summary(0.3, 0.02),
        "seconds": summary(30.75, 1.5),
        "updates": 3125,
        "epochs": 20,
        "train_accuracy": summary(0.9987, 0.001),
    } | changes


def one_test(metric, variants, verdict, estimate, **changes) -> dict:
    return {
        "metric": metric,
        "variants": variants,
        "n": [10] * len(variants),
        "estimate": estimate,
        "low": None if estimate is None else estimate - 0.004,
        "high": None if estimate is None else estimate + 0.004,
        "level": 0.99375,
        "p": 1e-9,
        "p_adjusted": 2e-8,
        "margin": 0.005,
        "p_equivalence": 0.4,
        "p_equivalence_adjusted": 0.8,
        "verdict": verdict,
        "power": 0.83,
        "detectable": 0.0046,
        "seeds_needed": 9,
        "sentence": f"{variants[0]} vs {variants[1]}: {verdict}.",
    } | changes


def record_data(*, smoke: bool = False) -> dict:
    """A record of the new kind: an answer, claims with literature checks, every test."""
    gap = one_test("generalization_gap", ["notebook-0.5", "notebook-0"], "lower", -0.086)
    wide = one_test("test_accuracy", ["wide-0.5", "wide-0"], "inconclusive", 0.0012, p_adjusted=0.4)
    both = ["wide-0.5", "wide-0", "notebook-0.5", "notebook-0"]
    return {
        "name": "dropout",
        "question": "Does dropout reduce overfitting, and does it help more where a network "
        "can memorise its training digits?",
        "description": "The notebook's network with dropout 0, 0.2 and 0.5, and the same "
        "layers 1024 units wide.",
        "anchor": "Srivastava et al. 2014, Fig. 9–10.",
        "status": "complete",
        "created": "2026-01-01T12:00:00",
        "updated": "2026-01-01T12:20:00",
        "seeds": list(range(10)),
        "budget": {
            "epochs": 20,
            "train_samples": 600,
            "validation_split": 0.2,
            "seeds": 10,
            "fit_samples": 480,
            "quick": smoke,
            "batch_sizes": [32, 1024],
        },
        "learning_rate_policy": "same",
        "baseline": "notebook-0",
        "variants": [
            variant("notebook-0", {"layers": layers(rate=None)}),
            variant("notebook-0.2", {}),
            variant("notebook-0.5", {"layers": layers(rate=0.5)}),
            variant("wide-0", {"layers": layers(1024, None)}),
            variant("wide-0.5", {"layers": layers(1024, 0.5)}),
            variant(
                "sgd-1024",
                {
                    "train": {"optimizer": "sgd", "batch_size": 1024},
                    "learning_rates": [0.01, 0.03, 0.1, 0.3],
                },
                batch_size=1024,
                learning_rate=0.03,
                epochs=64,
                updates=64,
                learning_rate_grid=[
                    {"learning_rate": 0.01, "val_accuracy": 0.912, "val_loss": 0.3},
                    {"learning_rate": 0.03, "val_accuracy": 0.934, "val_loss": 0.25},
                    {"learning_rate": 0.1, "val_accuracy": 0.921, "val_loss": 0.28},
                    {"learning_rate": 0.3, "diverged": True},
                ],
                epochs_to_target=summary(12.5, 1.2, missing=2),
                updates_to_target=summary(12.5, 1.2, missing=2),
                gap_at_matched_loss=summary(0.21, 0.03),
            ),
        ],
        "conclusion": ["notebook-0.5 lowered the gap by 0.086 (Holm-adjusted p < 0.001)."],
        "statistics": "Welch's t-test and TOST, Holm-adjusted over all 4 tests; intervals at "
        "the Bonferroni level.",
        "answer": [
            "Dropout 0.5 narrowed the gap between training and validation loss.",
            "Its effect on test accuracy is too small for 10 seeds to see: if it exists, it "
            "is under 0.7 points.",
        ],
        "claims": [
            gap
            | {
                "name": "gap",
                "statement": "Dropout 0.5 narrows the generalisation gap.",
                "anchor": "Srivastava et al. 2014",
                "expect": "lower",
                "literature": "agrees",
                "margin": 0.02,
            },
            wide
            | {
                "name": "wide",
                "statement": "Dropout 0.5 raises the wide net's test accuracy.",
                "expect": "higher",
                "literature": "inconclusive",
                "why": "the interval spans the margin; about 24 seeds per variant would decide it",
                "effect": 0.0035,
            },
            one_test(
                "test_accuracy",
                both,
                "not tested",
                None,
                p=None,
                p_adjusted=None,
                p_equivalence=None,
                p_equivalence_adjusted=None,
            )
            | {
                "name": "interaction",
                "statement": "Dropout helps the wide net more.",
                "expect": "higher",
                "literature": "not tested",
                "why": "a smoke run (--quick): too small to conclude anything",
            },
        ],
        "tests": [
            one_test(
                "test_accuracy",
                ["notebook-0.2", "notebook-0"],
                "equivalent",
                0.0004,
                p_adjusted=0.9,
                p_equivalence_adjusted=0.0004,
            )
        ],
        "target": 0.9,
        "smoke": smoke,
        "plots": ["loss.png", "forest.png"],
        "wall_seconds": 1234.5,
        "cpu_seconds": 2400.0,
    }


def experiment_folder(tmp_path: Path, data: dict, *, typed: bool = True) -> Path:
    """An experiment folder: its experiment.json (through `write_record`, or raw JSON for a
    record of an older version) and wide PNG plots, so the page has to scale them down."""
    folder = tmp_path / "experiments" / f"20260101-120000-{data['name']}"
    folder.mkdir(parents=True)
    if typed:
        write_record(folder, ExperimentRecord.model_validate(data))
    else:
        (folder / "experiment.json").write_text(json.dumps(data))
    for name in data["plots"]:
        Image.new("RGB", (1600, 600), (200, 220, 255)).save(folder / name)
    return folder


def report(tmp_path: Path, data: dict | None = None, **changes) -> str:
    folder = experiment_folder(tmp_path, data or record_data(**changes))
    return write_experiment_report(folder).read_text()


# ------------------------------------------------------------------------------ the page
def test_the_report_reads_question_answer_figure_claims_variants_then_how_we_know(tmp_path):
    html = report(tmp_path)
    marks = [
        'id="question"',
        "Dropout 0.5 narrowed the gap",  # the answer
        'id="fig-forest-png"',  # the forest plot first, though the record names loss first
        'id="claims-table"',
        'id="variants-table"',
        'id="fig-loss-png"',
        'id="how-we-know"',
        'id="tests-table"',
        "Each run trained 20 to 64 epochs",
    ]
    where = [html.index(mark) for mark in marks]
    assert where == sorted(where), list(zip(marks, where, strict=True))
    assert html.index("Dropout 0.5 narrowed") < html.index("<img")
    assert html.count("<img") == 2 and 'id="smoke"' not in html


def test_claims_show_the_estimate_in_the_metrics_units_verdict_and_literature(tmp_path):
    html = report(tmp_path)
    claims = html.split('id="claims-table"')[1].split("</table>")[0]
    assert "Dropout 0.5 narrows the generalisation gap." in claims
    assert "−0.086 [−0.090, −0.082]" in claims  # a gap: loss units, as the sentences say it
    assert "+0.12 points [−0.28, +0.52]" in claims  # accuracy in points
    assert "99.4% interval" in claims
    assert '<span class="badge agrees">agrees</span>' in claims
    assert '<span class="badge not-tested">not tested</span>' in claims
    assert "about 24 seeds per variant would decide it" in claims
    assert "(wide-0.5 − wide-0) − (notebook-0.5 − notebook-0)" in claims


def test_variants_are_short_diffs_against_the_preset(tmp_path):
    html = report(tmp_path)
    table = html.split('id="variants-table"')[1].split("</table>")[0]
    rows = {row.split("<strong>")[1].split("</strong>")[0]: row for row in table.split("<tr>")[2:]}
    assert "dropout 0.2 → 0<" in rows["notebook-0"] and "as its preset" in rows["notebook-0.2"]
    assert "dropout 0.2 → 0.5" in rows["notebook-0.5"]
    assert "units 100 → 1024, dropout 0.2 → 0.5" in rows["wide-0.5"]
    sgd = rows["sgd-1024"]
    assert "optimizer adam → sgd, lr 0.03 (tuned), batch 32 → 1,024" in sgd
    assert "0.01: 91.20% · 0.03: 93.40% (chosen) · 0.1: 92.10% · 0.3: diverged" in sgd
    assert "64 epochs" in sgd and "(2 never)" in sgd and "gap at matched loss" in sgd
    assert "Dense(" not in table  # no layer stacks, only their differences
    assert "to 90% validation accuracy" in table


def test_changes_every_variant_shares_are_said_once():
    data = record_data()
    for v in data["variants"]:
        v["spec"] = {"train": {"optimizer": "sgd"}, **v["spec"]}
    shared, diffs = lesson.changes(ExperimentRecord.model_validate(data))
    assert shared == ["optimizer adam → sgd"]
    assert diffs["notebook-0.2"] == [] and diffs["notebook-0.5"] == ["dropout 0.2 → 0.5"]


def test_layer_changes_name_activations_batch_norm_and_depth():
    batchnorm = [
        {"type": "Dense", "units": 100, "use_bias": False},
        {"type": "BatchNormalization"},
        {"type": "Activation", "activation": "sigmoid"},
        {"type": "Dense", "units": 100, "use_bias": False},
        {"type": "BatchNormalization"},
        {"type": "Activation", "activation": "sigmoid"},
        {"type": "Dense", "units": 10, "activation": "sigmoid"},
    ]
    assert lesson._layer_changes(SEED_LAYERS, batchnorm) == [
        "hidden layers 3 → 2",
        "activation sigmoid, relu, relu → sigmoid",
        "dropout 0.2 → 0",
        "+ batch norm ×2",
    ]
    assert lesson._layer_changes(SEED_LAYERS, SEED_LAYERS) == []


def test_p_values_are_never_printed_as_zero(tmp_path):
    html = report(tmp_path)
    assert "0.000" not in html.replace("0.0004", "")  # "p < 0.001", never "p = 0.000"
    tests = unescape(html.split('id="tests-table"')[1].split("</table>")[0])
    assert tests.count("difference p < 0.001") == 1 and "equivalence p < 0.001" in tests
    assert "difference p = 0.400" in tests and "unadjusted p < 0.001" in tests
    untested = tests.split("claim interaction")[1].split("</tr>")[0]
    assert "p =" not in untested and "p <" not in untested  # not tested: no p at all


def test_how_we_know_holds_power_budget_and_time(tmp_path):
    html = report(tmp_path)
    how = unescape(html.split('id="how-we-know"')[1])
    assert "Welch's t-test and TOST, Holm-adjusted" in how
    assert "83%" in how and "80% power detects 0.46 points" in how and "seeds needed 9" in how
    assert "margin ±0.50 points" in how and "margin ±0.020" in how
    assert (
        "Each run trained 20 to 64 epochs (each variant's minimum of updates) on 480 digits "
        "(600 with 120 held out for validation); 10 seeds per variant, "
        "and 4 runs tuning learning rates." in how
    )
    assert "1,234.5 s (20.6 min)" in how and "2,400.0 s (40.0 min)" in how
    assert "notebook-0.5 lowered the gap" in how  # the conclusion lines, in full, here
    assert "5,000" not in html


def test_a_smoke_run_says_so_after_the_answer(tmp_path):
    html = report(tmp_path, smoke=True)
    assert html.index("Dropout 0.5 narrowed") < html.index('id="smoke"') < html.index("<img")
    assert "too small to conclude anything" in html.split('id="smoke"')[1].split("</p>")[0]


def test_one_seed_shows_no_spread_and_runs_are_named_by_seed(tmp_path):
    """A smoke run's single seed has no spread: "38.04%", never "38.04% ± 0.00%", which a
    learner takes for a precise finding; runs read "seed 0", not their timestamped folder."""
    data = record_data(smoke=True)
    for v in data["variants"]:
        for key, value in list(v.items()):
            if isinstance(value, dict) and "values" in value:
                v[key] = {"mean": value["mean"], "std": 0.0, "values": [value["mean"]]}
        v["runs"] = [f"20261203-110946-{v['name']}-seed0"]
    never = {"mean": None, "std": None, "values": [], "missing": 1}
    data["variants"][-1] |= {"epochs_to_target": never, "updates_to_target": never}
    table = report(tmp_path, data=data).split('id="variants-table"')[1].split("</table>")[0]
    assert "95.12%" in table and "± 0.00%" not in table and "± 0.0000" not in table
    assert "runs, by seed: <span" in table and ">0</span>" in table and ">20261203" not in table
    assert table.count("never reached") == 1
    text = "\n".join(printed(data, tmp_path))
    assert "95.12%" in text and "± 0.00%" not in text


def old_record() -> dict:
    """experiment.json as written before claims, answers and smoke existed."""
    data = record_data()
    for key in ("answer", "claims", "tests", "target", "smoke", "cpu_seconds"):
        del data[key]
    data["budget"] = {"epochs": 20, "train_samples": 6000, "validation_split": 0.2, "seeds": 3}
    for v in data["variants"]:
        for key in [k for k in v if k.endswith("_target") or k in ("epochs", "train_accuracy")]:
            del v[key]
        v.pop("learning_rate_grid", None)
        v.pop("gap_at_matched_loss", None)
    data["conclusion"] = ["Test accuracy: no measurable difference (+0.1 points, p = 0.61)."]
    return data


def test_a_record_from_before_claims_still_renders(tmp_path):
    html = write_experiment_report(experiment_folder(tmp_path, old_record(), typed=False))
    html = html.read_text()
    assert html.index("no measurable difference") < html.index("<img")  # the answer
    assert 'id="claims-table"' not in html and 'id="tests-table"' not in html
    assert "Srivastava et al. 2014" in html and "on 4,800 digits" in html
    assert "dropout 0.2 → 0.5" in html and "to target" not in html


# ------------------------------------------------------------------------------ in Chromium
def open_page(browser, path: Path, width: int):
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    return context, page


NO_SIDEWAYS = "document.scrollingElement.scrollWidth <= window.innerWidth"


@pytest.mark.browser
@pytest.mark.parametrize("width", [1000, 400])
@pytest.mark.parametrize("smoke", [False, True])
def test_the_report_fits_the_screen_answer_first_in_chromium(browser, tmp_path, width, smoke):
    folder = experiment_folder(tmp_path, record_data(smoke=smoke))
    context, page = open_page(browser, write_experiment_report(folder), width)
    try:
        assert page.evaluate("window.innerWidth") == width
        assert page.evaluate(NO_SIDEWAYS), page.evaluate("document.scrollingElement.scrollWidth")
        page.click("#how-we-know summary")  # open "How we know": its tables fit too
        assert page.is_visible("#tests-table")
        assert page.evaluate(NO_SIDEWAYS), page.evaluate("document.scrollingElement.scrollWidth")
        first_image = page.evaluate("document.querySelector('img').getBoundingClientRect().top")
        answer = page.evaluate("document.querySelector('#answer').getBoundingClientRect().top")
        assert answer < first_image
        order = "document.querySelector('#answer').compareDocumentPosition(document.images[0])"
        assert page.evaluate(order) & 4  # Node.DOCUMENT_POSITION_FOLLOWING
        images = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.clientWidth)")
        assert images and max(images) <= width  # 1,600 px plots scaled to the page
        assert page.is_visible("#smoke") is smoke
    finally:
        context.close()


@pytest.mark.browser
@pytest.mark.parametrize("width", [1000, 400])
def test_an_old_record_fits_the_screen_in_chromium(browser, tmp_path, width):
    folder = experiment_folder(tmp_path, old_record(), typed=False)
    context, page = open_page(browser, write_experiment_report(folder), width)
    try:
        page.click("#how-we-know summary")
        assert page.evaluate(NO_SIDEWAYS), page.evaluate("document.scrollingElement.scrollWidth")
    finally:
        context.close()


# ------------------------------------------------------------------------------ the terminal
def printed(data: dict, folder: Path) -> list[str]:
    from rich.console import Console

    from digitlab.experiments.views import print_record

    console = Console(record=True, width=120)
    print_record(console, ExperimentRecord.model_validate(data), folder)
    return console.export_text().splitlines()


def test_the_terminal_says_smoke_first_then_answer_claims_table_and_how_we_know(tmp_path):
    folder = experiment_folder(tmp_path, record_data(smoke=True))
    write_experiment_report(folder)
    lines = printed(record_data(smoke=True), folder)
    assert lines[0] == "A smoke run (--quick): too small to conclude anything."
    assert lines[1] == "Dropout 0.5 narrowed the gap between training and validation loss."
    text = "\n".join(lines)
    marks = [
        "agrees       Dropout 0.5 narrows the generalisation gap. −0.086 [−0.090, −0.082]: "
        "lower, expected lower",
        "inconclusive Dropout 0.5 raises",
        "not tested   Dropout helps the wide net more. (a smoke run",
        "changes",  # the table's head
        "units 100 → 1024,",
        "How we know: 3 of 4 comparisons tested",
        f"experiment: {folder}   report: {folder / 'report.html'}",
    ]
    where = [text.index(mark) for mark in marks]
    assert where == sorted(where)
    assert (
        "10 seeds per variant, 20 to 64 epochs (each variant's minimum of updates) on 480 "
        "digits each" in text
    )
    assert "95.12% ± 0.21%" in text and "0.012 / 0.312" in text and "3,125" in text


def test_the_terminal_prints_an_old_records_conclusion(tmp_path):
    lines = printed(old_record(), tmp_path / "exp")
    assert lines[0] == "- Test accuracy: no measurable difference (+0.1 points, p = 0.61)."
    text = "\n".join(lines)
    assert "smoke" not in text and "report:" not in text  # no report written there
    assert "How we know: Welch's t-test and TOST" in text and "3 seeds per variant" in text


def test_a_tuning_rate_that_failed_on_every_try_is_shown_as_failed_not_as_diverged():
    from digitlab.experiments.results import Tuning
    from digitlab.experiments.schema import GridPoint, VariantResult

    tuning = Tuning(diverged={1.0}, failed={0.1})
    points = tuning.points([0.1, 1.0])
    assert points == [
        {"learning_rate": 0.1, "failed": True, "run": None},
        {"learning_rate": 1.0, "diverged": True, "run": None},
    ]
    assert tuning.chosen([0.1, 1.0]) is None  # nothing trained: no rate to choose
    grid = tuple(GridPoint.model_validate(p) for p in points)
    variant = VariantResult.model_construct(learning_rate_grid=grid, learning_rate=None)
    assert lesson.grid_text(variant) == "0.1: failed, not trained · 1: diverged"
