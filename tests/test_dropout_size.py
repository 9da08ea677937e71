"""Issue 21 §3: the training-set-size sweep (`dropout-size`) — each variant trains on its own
first N digits and validates on the same count right after them; the short runs' gaps
predict where dropout gains most, judged on the runs' intervals."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")

from digitlab.errors import SpecError
from digitlab.experiments import plan, predictions, verdicts
from digitlab.experiments.definitions import BUILT_IN, MECHANISMS
from digitlab.experiments.schema import Definition, ExperimentRecord
from digitlab.experiments.sizes import DROPOUT_SIZE, SIZES, UPDATES, VALIDATION
from digitlab.schema import validate


def _specs(definition, budget, quick=False):
    return {
        v.name: plan.variant_spec(definition, v, budget, 0, "same", quick=quick)
        for v in definition.variants
    }


def test_each_size_trains_on_its_first_digits_and_validates_on_the_same_count_after_them():
    from digitlab.fastfit import split

    definition = BUILT_IN["dropout-size"]
    budget = plan.make_budget(definition, False)
    assert budget.fit_samples == SIZES[-1]
    seen = set()
    for variant in definition.variants:
        spec = plan.variant_spec(definition, variant, budget, 0, "same")
        digits = np.arange(spec.train.train_samples)
        train, _, (validation, _) = split(digits, digits, spec.train.validation_split)
        assert list(train) == list(range(variant.train_digits))  # exactly the first N
        assert list(validation) == list(
            range(variant.train_digits, variant.train_digits + VALIDATION)
        )
        assert plan.fit_digits(spec) == variant.train_digits
        # the same updates at every size, to within one epoch's steps
        steps = plan.steps_per_epoch(spec.train.batch_size, variant.train_digits)
        assert UPDATES <= plan.updates_per_run(spec) < UPDATES + steps
        seen.add(variant.train_digits)
    assert seen == set(SIZES)


def test_a_size_larger_than_the_budget_is_refused_in_one_line_and_capped_in_a_smoke_run():
    definition = BUILT_IN["dropout-size"]
    small = plan.make_budget(definition, False, train_samples=6_000)
    with pytest.raises(
        SpecError, match=r"trains on 20,000 digits, but the budget leaves 5,714"
    ) as e:
        _specs(definition, small)
    assert "\n" not in str(e.value) and "--train-samples" in str(e.value)
    quick = plan.make_budget(definition, True)
    specs = _specs(definition, quick, quick=True)
    assert {plan.fit_digits(s) for s in specs.values()} == {500, quick.fit_samples}


def test_the_measured_inputs_are_each_variants_own_digits(mnist):
    from digitlab.experiments.inputs import Inputs
    from digitlab.model import prepare_inputs

    definition = BUILT_IN["dropout-size"]
    budget = plan.make_budget(definition, False)
    inputs = Inputs(budget, None)
    spec = plan.variant_spec(definition, definition.variants[0], budget, 0, "same")  # n500-0
    x, y, batch = inputs.for_spec(spec)
    assert len(x) == len(y) == 500
    np.testing.assert_array_equal(y, mnist[0][1][:500])
    # the activation batch: the last of n500's own validation digits (500..1,500)
    expected = prepare_inputs(mnist[0][0][1_000:1_500], spec.input_shape)
    np.testing.assert_array_equal(batch, expected)


def test_the_size_pairs_are_one_variant_with_dropout_and_one_without_per_size():
    from types import SimpleNamespace

    definition = BUILT_IN["dropout-size"]
    specs = _specs(definition, plan.make_budget(definition, False))
    pairs = predictions._size_pairs(SimpleNamespace(specs=specs))
    assert list(pairs) == list(SIZES)
    assert pairs[500] == {"with": "n500-0.5", "without": "n500-0"}
    assert MECHANISMS["dropout-size"] == "size-gap"
    # a smoke budget caps three sizes at the same digits: only 500 keeps one pair
    quick = _specs(definition, plan.make_budget(definition, True), quick=True)
    assert list(predictions._size_pairs(SimpleNamespace(specs=quick))) == [500]


def _summary(values):
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)),
            "values": [float(v) for v in values], "missing": 0}  # fmt: skip


def _record(accuracy: dict[str, list[float]], gaps: dict[str, list[float]]) -> ExperimentRecord:
    from datetime import datetime

    variants = [
        {
            "name": name, "spec": {}, "runs": [], "seeds": [0, 1, 2], "batch_size": 32,
            "test_accuracy": _summary(values), "final_train_loss": _summary([0.1, 0.1, 0.2]),
            "final_val_loss": _summary([0.1, 0.1, 0.2]), "updates": 100,
            "seconds": _summary([1.0, 1.1, 1.2]),
            "generalization_gap": _summary(gaps.get(name, [0.1, 0.11, 0.12])),
        }
        for name, values in accuracy.items()
    ]  # fmt: skip
    now = datetime(2026, 12, 3)
    return ExperimentRecord.model_validate(
        {"name": "dropout-size", "question": "?", "status": "complete", "created": now,
         "updated": now, "seeds": [0, 1, 2], "budget": {}, "learning_rate_policy": "same",
         "baseline": "n5000-0", "variants": variants, "conclusion": [], "statistics": ""}
    )  # fmt: skip


MEASURED = {
    "largest": {"digits": 500, "with": "n500-0.5", "without": "n500-0"},
    "smallest": {"digits": 20000, "with": "n20000-0.5", "without": "n20000-0"},
}


@pytest.mark.parametrize(
    ("gain_small", "expected"),
    [(0.02, "held"), (-0.02, "missed"), (0.0, "inconclusive")],
)
def test_the_gain_is_judged_on_the_welch_interval_of_the_difference_of_differences(
    gain_small, expected
):
    base = np.array([0.90, 0.905, 0.91])
    accuracy = {
        "n500-0.5": list(base + gain_small), "n500-0": list(base),
        "n20000-0.5": list(base + 0.001), "n20000-0": list(base + 0.0005),
    }  # fmt: skip
    gaps = {"n500-0": [0.7, 0.72, 0.74], "n20000-0": [0.05, 0.06, 0.07]}
    gain, order = predictions.JUDGES["size-gap"](_record(accuracy, gaps), MEASURED)
    assert gain["verdict"] == expected, gain
    low, high = gain["values"]["low"], gain["values"]["high"]
    assert (low > 0) == (expected == "held") and (high < 0) == (expected == "missed")
    assert order["verdict"] == "held"  # 20,000's gap below 500's
    if expected == "missed":
        assert gain["why"].startswith("by ") and "points at least" in gain["why"]


def test_a_gain_without_two_seeds_is_inconclusive():
    record = _record({"n500-0.5": [0.9, 0.91, 0.92]}, {})
    part = verdicts.gain_part(record, ("n500-0.5", "n500-0", "a", "b"), 0.95, "words")
    assert part["verdict"] == "inconclusive" and "fewer than 2 seeds" in part["why"]


def _mini_sweep() -> Definition:
    """dropout-size at 100 and 400 digits, 200 validating each, 40 updates a run, 2 seeds."""
    data = json.loads(json.dumps(DROPOUT_SIZE))
    smaller = {500: 100, 2000: 400}  # the built-in's two smallest sizes, scaled down
    data["variants"] = [
        {**v, "name": v["name"].replace(str(v["train_digits"]), str(smaller[v["train_digits"]])),
         "train_digits": smaller[v["train_digits"]], "min_updates": 40}
        for v in data["variants"]
        if v["train_digits"] in smaller
    ]  # fmt: skip
    data["budget"] = {"epochs": 1, "train_samples": 600, "validation_split": 1 / 3, "seeds": 2}
    data["comparisons"] = [["n100-0.5", "n100-0"], ["n400-0.5", "n400-0"]]
    data["baseline"] = "n400-0"
    data["claims"] = []
    return validate(Definition, data, "mini sweep")


@pytest.mark.slow
def test_a_small_sweep_predicts_before_its_runs_and_judges_after_them(tmp_path, monkeypatch, mnist):
    from digitlab.experiments import definitions
    from digitlab.experiments.runner import run_experiment
    from digitlab.report import lesson
    from digitlab.runs import read_run

    definition = _mini_sweep()
    monkeypatch.setitem(definitions.MECHANISMS, definition.name, "size-gap")
    monkeypatch.setattr(predictions, "SHORT_UPDATES", 20)
    outcome = run_experiment(definition, runs_dir=tmp_path, live=False)
    folder = outcome.folder
    stored = json.loads((folder / predictions.PREDICTION_FILE).read_text())["prediction"]
    assert [s["digits"] for s in stored["measured"]["sizes"]] == [100, 400]
    for size in stored["measured"]["sizes"]:  # 20 updates of batch 32 at each size
        assert size["epochs"] == -(-20 // -(-size["digits"] // 32))
    record = outcome.record
    assert record.prediction.verdict in ("held", "missed", "inconclusive")
    assert len(record.prediction.parts) == 2
    assert (folder / predictions.PREDICTION_PNG).stat().st_size > 1000
    assert record.plots[0] == predictions.PREDICTION_PNG
    assert {v.name: v.fit_digits for v in record.variants} == {
        "n100-0": 100, "n100-0.5": 100, "n400-0": 400, "n400-0.5": 400,
    }  # fmt: skip
    for variant in record.variants:
        run = read_run(folder / "runs" / variant.runs[0])
        assert run.spec.train.train_samples == variant.fit_digits + 200
        assert len(variant.test_accuracy.values) == 2
    assert "on 100 to 400 digits" in lesson.budget_sentence(record)
    assert "400 training digits" in lesson.variant_changes(record.variants[2])


def test_the_lead_figure_shows_each_size_before_and_after():
    from digitlab.experiments.figures_sizes import size_figure
    from digitlab.experiments.schema import Prediction

    base = np.array([0.90, 0.905, 0.91])
    accuracy = {
        "n500-0.5": list(base + 0.02), "n500-0": list(base),
        "n20000-0.5": list(base + 0.001), "n20000-0": list(base + 0.0005),
    }  # fmt: skip
    sizes = [
        {**MEASURED["largest"], "gap": 0.76, "epochs": 32},
        {**MEASURED["smallest"], "gap": 0.08, "epochs": 1},
    ]
    record = _record(accuracy, {}).model_copy(
        update={
            "prediction": Prediction(
                mechanism="size-gap", statement=("s",), made="2026-12-03T20:00:00",
                measured={**MEASURED, "sizes": sizes, "updates": 500},
            )
        }
    )  # fmt: skip
    accuracy_ax, before, after = size_figure(record).axes
    assert all(ax.get_xscale() == "log" for ax in (accuracy_ax, before, after))
    assert [round(p.get_height(), 2) for p in before.patches] == [0.76, 0.08]
    # dropout's gain per size: +2.00 points on 500 digits, +0.05 on 20,000
    points = sorted(
        (float(x), round(float(y), 2))
        for line in after.lines
        for x, y in zip(*line.get_data(), strict=True)
        if line.get_marker() == "o"  # the means, not the whiskers' caps
    )
    assert points == [(500.0, 2.0), (20000.0, 0.05)]
