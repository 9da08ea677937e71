"""`digitlab robustness`: AURC against a direct computation, the verdict `predict` gives, the
CLI's table, JSON and refusals, and the section in the run's report.

(tests/test_robustness.py is the attack campaign's: crafted files and bad flags.)
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from commands import one_line_error
from typer.testing import CliRunner

from digitlab.cli import app
from digitlab.corruptions import CORRUPTIONS, corrupt
from digitlab.robustness import (
    CLEAN,
    FIGURE_FILE,
    aurc,
    held_out,
    measure_robustness,
    pooled_row,
    save_robustness,
    score,
    trust_rank,
)
from digitlab.runs import REPORT_FILE, load_run
from digitlab.runs.folder import ROBUSTNESS_FILE, read_robustness

runner = CliRunner()


# --------------------------------------------------------------------------------------- AURC
def _direct_aurc(correct, rank) -> float:
    """Geifman & El-Yaniv's definition, step by step: sort by rank (highest first), the error
    rate among the top k for every k, their mean."""
    order = sorted(range(len(rank)), key=lambda i: -rank[i])
    risks = [sum(not correct[i] for i in order[:k]) / k for k in range(1, len(order) + 1)]
    return sum(risks) / len(risks)


def test_aurc_equals_the_direct_computation_on_a_hand_made_case():
    correct = np.array([True, False, True, True, False, True])
    rank = np.array([0.9, 0.8, 0.7, 0.95, 0.3, 0.5])
    # by hand: order 3,0,1,2,5,4 -> errors 0,0,1,1,1,2 -> risks 0, 0, 1/3, 1/4, 1/5, 2/6
    expected = (0 + 0 + 1 / 3 + 1 / 4 + 1 / 5 + 2 / 6) / 6
    assert aurc(correct, rank) == pytest.approx(expected)
    assert aurc(correct, rank) == pytest.approx(_direct_aurc(correct, rank))


def test_aurc_of_random_cases_equals_the_direct_computation():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 40))
        correct, rank = rng.random(n) < 0.7, rng.random(n)
        assert aurc(correct, rank) == pytest.approx(_direct_aurc(correct, rank))


def test_tied_ranks_count_as_every_order_at_once():
    correct = np.array([True, False, True, False, True])
    rank = np.array([0.5, 0.5, 0.5, 0.9, 0.1])
    orders = [
        _direct_aurc(correct[list(p)], rank[list(p)] + 1e-9 * np.arange(5)[::-1])
        for p in itertools.permutations(range(5))
        if sorted(rank[list(p)], reverse=True) == list(rank[list(p)])
    ]
    assert len(orders) == 6  # the three tied answers in each order
    assert aurc(correct, rank) == pytest.approx(np.mean(orders))


def test_aurc_extremes():
    assert aurc(np.ones(5, bool), np.arange(5)) == 0.0
    assert aurc(np.zeros(5, bool), np.arange(5)) == 1.0
    # the two errors ranked last: risk 0 until they come in
    perfect = aurc(np.array([True, True, True, False, False]), np.array([5, 4, 3, 2, 1]))
    assert perfect == pytest.approx((0 + 0 + 0 + 1 / 4 + 2 / 5) / 5)


def test_the_verdict_ranks_confident_answers_first():
    rank = trust_rank(np.array([0.99, 0.6, 0.7]), np.array([False, True, True]))
    assert list(np.argsort(-rank)) == [2, 1, 0]
    np.testing.assert_array_equal(trust_rank(np.array([0.2, 0.9]), None), [0.2, 0.9])


def test_a_score_counts_and_its_shares():
    correct = np.array([True, True, False, True, False])
    confident = np.array([True, True, True, False, False])
    row = score("fog", correct, np.linspace(1, 0.5, 5), confident)
    assert (row["digits"], row["correct"], row["confident"], row["confident_correct"]) == (
        5,
        3,
        3,
        2,
    )
    assert row["accuracy"] == 0.6 and row["confident_share"] == 0.6
    assert row["selective_accuracy"] == pytest.approx(2 / 3)
    unjudged = score("fog", correct, np.linspace(1, 0.5, 5), None)
    assert unjudged["confident"] is None and unjudged["selective_accuracy"] is None


def test_the_pooled_row_adds_up_the_corruptions_not_the_clean_digits():
    rows = [
        score(CLEAN, np.ones(4, bool), np.ones(4), np.ones(4, bool)),
        score("fog", np.array([1, 0, 0, 0], bool), np.ones(4), np.array([1, 1, 0, 0], bool)),
        score("zigzag", np.array([1, 1, 1, 0], bool), np.ones(4), np.array([1, 1, 1, 1], bool)),
    ]
    pooled = pooled_row(rows)
    assert pooled["digits"] == 8 and pooled["correct"] == 4 and pooled["confident"] == 6
    assert pooled["selective_accuracy"] == pytest.approx(4 / 6)
    assert pooled["aurc"] == pytest.approx((rows[1]["aurc"] + rows[2]["aurc"]) / 2)
    assert pooled_row(rows[:1]) is None


# ------------------------------------------------------------------------------ on a real run
@pytest.fixture(scope="module")
def small_run(tmp_path_factory, mnist):
    """The seed network on 3,000 digits for 2 epochs (calibrated as training ends)."""
    from digitlab.presets import get_preset
    from digitlab.training import train

    spec = get_preset("seed")
    spec = spec.model_copy(
        update={"train": spec.train.model_copy(update={"train_samples": 3000, "epochs": 2})}
    )
    return train(spec, runs_dir=tmp_path_factory.mktemp("runs"), verbose=0, pictures=False)


def test_robustness_gives_the_verdict_predict_gives(small_run, mnist):
    """Accuracy and confident counts equal what `digitlab.predict` says of the same digits,
    clean and corrupted: the one verdict, not a copy of it."""
    from digitlab.prediction import predict

    _, (x_test, y_test) = mnist
    result = measure_robustness(small_run, ["fog", "zigzag"], samples=300, seed=5)
    assert [row["corruption"] for row in result.rows] == [CLEAN, "fog", "zigzag"]
    index = result.index
    assert len(index) == 300 and index.min() >= len(y_test) // 2  # calibration saw the rest
    assert set(index) <= set(held_out(len(y_test)))
    for row in result.rows:
        images = x_test[index]
        if row["corruption"] != CLEAN:
            images = corrupt(images, row["corruption"], seed=5, index=index)
        said = predict(small_run, images)
        confident = np.array([v["confident"] for v in said.verdicts])
        right = said.digits == y_test[index]
        assert row["correct"] == right.sum()
        assert row["confident"] == confident.sum()
        assert row["confident_correct"] == (confident & right).sum()


def test_the_cli_measures_saves_and_shows_a_table(small_run):
    result = runner.invoke(
        app, ["robustness", str(small_run.path), "-c", "fog,Zigzag", "--samples", "200"]
    )
    assert result.exit_code == 0, result.output
    for text in ("clean", "fog", "zigzag", "all 2 pooled", "selective", "AURC", "200 held-out"):
        assert text in result.output
    saved = read_robustness(small_run.path)
    assert [row["corruption"] for row in saved["rows"]] == [CLEAN, "fog", "zigzag"]
    assert (small_run.path / FIGURE_FILE).stat().st_size > 10_000


def test_the_cli_json_has_every_figure_and_is_the_saved_file(small_run):
    result = runner.invoke(
        app, ["robustness", str(small_run.path), "--corruption", "stripe", "-n", "100", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["digits"] == 100 and data["calibrated"] is True
    for row in data["rows"]:
        assert 0 <= row["confident_correct"] <= min(row["confident"], row["correct"])
        assert row["accuracy"] == row["correct"] / row["digits"]
        if row["confident"]:
            assert row["selective_accuracy"] == row["confident_correct"] / row["confident"]
        assert 0 <= row["aurc"] <= 1
    saved = read_robustness(small_run.path)
    assert saved == {key: value for key, value in data.items() if key != "files"}
    assert str(small_run.path / ROBUSTNESS_FILE) in data["files"]


def test_the_same_seed_gives_the_same_figures(small_run):
    first = measure_robustness(small_run, ["glass_blur"], samples=100, seed=2).rows
    assert measure_robustness(small_run, ["glass_blur"], samples=100, seed=2).rows == first


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--corruption", "zigzg"], "unknown corruption 'zigzg' (did you mean 'zigzag'?)"),
        (["--samples", "0"], "--samples"),
    ],
)
def test_bad_options_are_one_line(small_run, args, message):
    line = one_line_error(runner.invoke(app, ["robustness", str(small_run.path), *args]))
    assert message in line


def test_a_missing_run_is_one_line(tmp_path):
    line = one_line_error(runner.invoke(app, ["robustness", str(tmp_path / "nope")]))
    assert "not found" in line


def test_the_report_shows_the_section(small_run):
    from digitlab.report import write_run_report

    result = measure_robustness(small_run, ["rotate", "brightness"], samples=100)
    save_robustness(small_run, result)
    html = write_run_report(load_run(small_run.path)).read_text()
    assert 'id="robustness"' in html and 'id="robustness-table"' in html
    for text in ("rotate", "brightness", "all 2 pooled", "selective accuracy"):
        assert text in html
    assert 'id="fig-robustness-png"' in html and "data:image/png;base64," in html
    assert (small_run.path / REPORT_FILE).is_file()


def test_a_damaged_results_file_leaves_the_section_out_not_the_report(small_run, tmp_path):
    import shutil

    from digitlab.report import write_run_report

    copy = shutil.copytree(small_run.path, tmp_path / "copy")
    (copy / ROBUSTNESS_FILE).write_text('{"rows": "not rows"}')
    html = write_run_report(load_run(copy)).read_text()
    assert 'id="robustness"' not in html and 'id="metrics"' in html


def test_every_corruption_is_measured_by_default(small_run):
    result = measure_robustness(small_run, samples=20)
    assert [row["corruption"] for row in result.rows] == [CLEAN, *CORRUPTIONS]
    assert result.to_dict()["pooled"]["digits"] == 20 * len(CORRUPTIONS)
