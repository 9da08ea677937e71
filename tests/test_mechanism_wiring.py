"""Issue 21's wiring: predictions stored before the runs and judged after them, the learner's
guess kept and shown, and the training recorder's figures against direct computations.

The formulas themselves are tested against oracles in test_mechanisms.py; here synthetic
records with known intervals check that a prediction is judged "held", "missed by ×k" or
"inconclusive" exactly when its intervals say so.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

os.environ.setdefault("KERAS_BACKEND", "jax")

from digitlab.experiments import predictions, verdicts
from digitlab.experiments.schema import ExperimentRecord, Prediction

FIT = 5000


def _summary(values, missing: int = 0) -> dict:
    values = [float(v) for v in values]
    std = float(np.std(values, ddof=1)) if len(values) > 1 else (0.0 if values else None)
    return {
        "mean": float(np.mean(values)) if values else None,
        "std": std,
        "values": values,
        "missing": missing,
    }


def _variant(name: str, batch: int, examples=(), **fields) -> dict:
    base = _summary([0.9, 0.91, 0.92])
    return {
        "name": name,
        "spec": {},
        "runs": [f"{name}-seed{i}" for i in range(3)],
        "seeds": [0, 1, 2],
        "batch_size": batch,
        "test_accuracy": base,
        "final_train_loss": base,
        "final_val_loss": base,
        "generalization_gap": base,
        "seconds": base,
        "updates": 100,
        "epochs": 20,
        "examples_to_target": _summary(examples) if examples else None,
        **fields,
    }


def _record(variants: list[dict], status: str = "complete", **fields) -> ExperimentRecord:
    now = datetime(2026, 12, 3)
    return ExperimentRecord.model_validate(
        {
            "name": "batch-size",
            "question": "?",
            "status": status,
            "created": now,
            "updated": now,
            "seeds": [0, 1, 2],
            "budget": {"fit_samples": FIT},
            "learning_rate_policy": "tuned",
            "baseline": "batch-32",
            "variants": variants,
            "conclusion": ["a conclusion"],
            "statistics": "",
            **fields,
        }
    )


NOISE = {"variant": "batch-32", "noise_scale": 100.0, "standard_error": 0.0}
ANCHOR = [20000, 20000, 25000]  # digits to the target: 4, 4 and 5 epochs of 5,000


def _predicted_range(batch: int, parts: int) -> tuple[float, float]:
    """The anchor's interval (t, Bonferroni over `parts`, one epoch lower) × E(B)/E(32)."""
    at = 1 - 0.05 / parts
    half = stats.t.ppf(0.5 + at / 2, 2) * stats.sem(ANCHOR)
    ratio = (batch + 100) / (32 + 100)
    return (np.mean(ANCHOR) - half - FIT) * ratio, (np.mean(ANCHOR) + half) * ratio


def test_a_noise_scale_prediction_within_the_measured_interval_holds():
    low, high = _predicted_range(1024, 1)
    middle = (low + high) / 2
    record = _record(
        [
            _variant("batch-32", 32, ANCHOR),
            _variant("batch-1024", 1024, [middle - 5000, middle, middle + 5000]),
        ]
    )
    parts = verdicts.noise_scale_parts(record, NOISE)
    assert [p["verdict"] for p in parts] == ["held"]
    assert parts[0]["values"]["predicted_low"] == pytest.approx(low)
    assert parts[0]["values"]["predicted_high"] == pytest.approx(high)
    assert verdicts.overall(parts)[0] == "held"


def test_a_noise_scale_prediction_outside_it_is_missed_by_the_gap_between_them():
    low, _ = _predicted_range(1024, 1)
    took = [30000, 30000, 30000]  # far fewer digits than predicted (no spread: mean ± 0)
    record = _record([_variant("batch-32", 32, ANCHOR), _variant("batch-1024", 1024, took)])
    verdict, sentence = verdicts.overall(verdicts.noise_scale_parts(record, NOISE))
    assert verdict == "missed"
    assert sentence.startswith(f"missed by ×{low / 30000:.2g} at batch-1024")


def test_a_batch_that_never_reached_the_target_holds_only_if_predicted_to_need_more():
    never = _variant("batch-1024", 1024, examples=())
    never["examples_to_target"] = _summary([], missing=3)  # 20 epochs × 5,000, not reached
    record = _record([_variant("batch-32", 32, ANCHOR), never])
    (part,) = verdicts.noise_scale_parts(record, NOISE)
    assert part["verdict"] == "held"  # predicted ~190,000: more than the 95,000 it got to
    small = dict(NOISE, noise_scale=1e6)  # a huge B_noise: batch 1024 needs the anchor's digits
    (part,) = verdicts.noise_scale_parts(record, small)
    assert part["verdict"] == "missed"


def test_one_seed_or_an_anchor_short_of_the_target_is_inconclusive():
    one = _record([_variant("batch-32", 32, [20000]), _variant("batch-128", 128, [40000])])
    assert verdicts.noise_scale_parts(one, NOISE)[0]["verdict"] == "inconclusive"
    short = _variant("batch-32", 32)
    short["examples_to_target"] = _summary([20000], missing=2)
    record = _record([short, _variant("batch-128", 128, [40000, 45000, 40000])])
    (part,) = verdicts.noise_scale_parts(record, NOISE)
    assert part["verdict"] == "inconclusive" and "anchor" in part["why"]
    waiting = _record(
        [_variant("batch-32", 32, ANCHOR), _variant("batch-128", 128)], status="interrupted"
    )
    assert verdicts.noise_scale_parts(waiting, NOISE)[0]["verdict"] == "pending"


def test_the_stable_rate_holds_between_the_grids_last_trained_and_first_failed_rate():
    grid = [{"learning_rate": r, "diverged": r > 0.5, "run": None} for r in (0.1, 0.3, 1.0)]
    record = _record([_variant("unit-sgd", 32, learning_rate_grid=grid)])
    held, low, high = (
        verdicts.stable_rate_parts(record, {"unit-sgd": rate})[0] for rate in (0.6, 0.2, 2.0)
    )
    assert held["verdict"] == "held"
    assert low["verdict"] == "missed" and low["why"].startswith("by ×1.5 at unit-sgd")
    assert high["verdict"] == "missed" and high["why"].startswith("by ×2 at unit-sgd")
    # a rate whose network ends at chance failed too, though its loss never became NaN
    grid[2] = {"learning_rate": 1.0, "val_accuracy": 0.11, "run": "unit-sgd-lr1"}
    record = _record([_variant("unit-sgd", 32, learning_rate_grid=grid)])
    (part,) = verdicts.stable_rate_parts(record, {"unit-sgd": 2.0})
    assert part["verdict"] == "missed" and "failed at 1" in part["why"]
    grid[2]["val_accuracy"] = 0.9
    record = _record([_variant("unit-sgd", 32, learning_rate_grid=grid)])
    assert verdicts.stable_rate_parts(record, {"unit-sgd": 2.0})[0]["verdict"] == "held"


def test_an_order_holds_when_the_welch_interval_excludes_zero():
    fast = _variant("std-sgd", 32, final_train_loss=_summary([0.10, 0.11, 0.12]))
    slow = _variant("unit-sgd", 32, final_train_loss=_summary([0.30, 0.31, 0.33]))
    near = _variant("raw-sgd", 32, final_train_loss=_summary([0.09, 0.13, 0.11]))
    record = _record([fast, slow, near])
    at = verdicts.level(2)
    assert (
        verdicts.order_part(record, "std-sgd", "unit-sgd", "final_train_loss", at, "")["verdict"]
        == "held"
    )
    assert (
        verdicts.order_part(record, "unit-sgd", "std-sgd", "final_train_loss", at, "")["verdict"]
        == "missed"
    )
    assert (
        verdicts.order_part(record, "std-sgd", "raw-sgd", "final_train_loss", at, "")["verdict"]
        == "inconclusive"
    )


def test_saturation_is_held_within_two_points_of_the_runs_epoch_zero():
    runs = {
        f"raw-sgd-seed{i}": {"1 sigmoid": {"saturated": [0.96 + i / 100, 1.0]}} for i in range(3)
    }
    record = _record([_variant("raw-sgd", 32, activations=runs)])
    assert verdicts.saturation_part(record, "raw-sgd", 0.97, 0.95)["verdict"] == "held"
    missed = verdicts.saturation_part(record, "raw-sgd", 0.5, 0.95)
    assert missed["verdict"] == "missed" and missed["why"].startswith("by ")


# ------------------------------------------------------------------------------- the stage
def _experiment(folder, done=False) -> SimpleNamespace:
    from digitlab.experiments.definitions import BUILT_IN

    return SimpleNamespace(
        folder=folder,
        definition=BUILT_IN["batch-size"],
        done={("batch-32", 0): object()} if done else {},
        tuning={},
    )


def test_the_prediction_is_printed_and_stored_before_the_runs_then_judged(tmp_path, monkeypatch):
    from rich.console import Console

    measured = dict(NOISE)
    monkeypatch.setitem(
        predictions.MEASURES,
        "noise-scale",
        lambda experiment: (measured, ["noise scale ≈ 100 digits"]),
    )
    console = Console(record=True, width=200)
    made = predictions.before_runs(_experiment(tmp_path), "batch-1 wins", console)
    assert "noise scale ≈ 100 digits" in console.export_text()
    assert made.verdict == "pending" and made.made <= datetime.now()
    stored = json.loads((tmp_path / predictions.PREDICTION_FILE).read_text())
    assert stored["guess"] == "batch-1 wins"
    assert stored["prediction"]["measured"] == {**measured, "cpu_seconds": pytest.approx(0, abs=1)}

    low, high = _predicted_range(1024, 1)
    middle = (low + high) / 2
    record = _record(
        [
            _variant("batch-32", 32, ANCHOR),
            _variant("batch-1024", 1024, [middle - 5000, middle, middle + 5000]),
        ]
    )
    judged = predictions.judged(tmp_path, record, draw=True)
    assert judged.guess == "batch-1 wins"
    assert judged.prediction.verdict == "held" and judged.prediction.parts[0].name == "batch-1024"
    assert judged.conclusion[-1].startswith("The prediction made before the runs")
    again = predictions.judged(tmp_path, judged)  # rejudging keeps one line about it
    assert sum(line.startswith(predictions.CONCLUSION) for line in again.conclusion) == 1
    assert judged.plots[0] == predictions.PREDICTION_PNG
    assert (tmp_path / predictions.PREDICTION_PNG).stat().st_size > 10_000
    # the record round-trips through experiment.json with its prediction
    back = ExperimentRecord.model_validate_json(judged.model_dump_json())
    assert back.prediction == judged.prediction and back.guess == "batch-1 wins"


def test_a_resumed_experiment_keeps_its_prediction_and_never_measures_after_runs(
    tmp_path, monkeypatch
):
    calls = []
    monkeypatch.setitem(
        predictions.MEASURES,
        "noise-scale",
        lambda experiment: calls.append(1) or (dict(NOISE), ["first"]),
    )
    predictions.before_runs(_experiment(tmp_path), None)
    predictions.before_runs(_experiment(tmp_path, done=True), None)  # a resume
    assert calls == [1]
    late = tmp_path / "late"
    late.mkdir()
    assert predictions.before_runs(_experiment(late, done=True), "g") is None  # runs started
    assert calls == [1] and predictions.read_prediction(late) == (None, "g")


def test_a_damaged_prediction_file_is_one_line(tmp_path):
    from digitlab.errors import RunError

    (tmp_path / predictions.PREDICTION_FILE).write_text("[1, 2]")
    with pytest.raises(RunError, match="not a JSON object"):
        predictions.read_prediction(tmp_path)
    (tmp_path / predictions.PREDICTION_FILE).write_text('{"prediction": {"mechanism": 1}}')
    with pytest.raises(RunError, match="prediction.json"):
        predictions.read_prediction(tmp_path)
    # a valid prediction whose measurement lacks what its judge reads
    damaged = Prediction(
        mechanism="size-gap", statement=("s",), measured={"sizes": []}, made=datetime(2026, 12, 3)
    )
    predictions.write_prediction(tmp_path, damaged, None)
    with pytest.raises(RunError, match="its measurement is not what the size-gap") as error:
        predictions.judged(tmp_path, _record([]))
    assert "\n" not in str(error.value)


def test_the_report_leads_with_the_prediction_and_shows_the_guess(tmp_path, monkeypatch):
    from digitlab.experiments.record import write_record
    from digitlab.report import write_experiment_report

    monkeypatch.setitem(
        predictions.MEASURES,
        "noise-scale",
        lambda experiment: (dict(NOISE), ["noise scale ≈ 100 digits"]),
    )
    predictions.before_runs(_experiment(tmp_path), "batch-1 <wins>")
    record = _record([_variant("batch-32", 32, ANCHOR), _variant("batch-128", 128, [1, 1, 1])])
    write_record(tmp_path, predictions.judged(tmp_path, record, draw=True))
    html = write_experiment_report(tmp_path).read_text()
    assert html.index('id="prediction"') < html.index('id="variants"')
    assert "batch-1 &lt;wins&gt;" in html  # escaped
    assert "missed by" in html and "noise scale ≈ 100 digits" in html


def test_prediction_model_refuses_an_unknown_verdict():
    with pytest.raises(ValueError):
        Prediction(mechanism="x", statement=(), made=datetime.now(), verdict="maybe")


# --------------------------------------------------------------------------------- --guess
def _cli(*args):
    from typer.testing import CliRunner

    from digitlab.cli import app

    return CliRunner().invoke(app, list(args))


def test_a_guess_round_trips_through_the_record_and_is_shown_beside_the_result(tmp_path, mnist):
    spec = tmp_path / "one.toml"
    spec.write_text(
        'question = "?"\n[budget]\nepochs = 1\ntrain_samples = 500\n[[variants]]\nname = "a"\n'
    )
    runs = str(tmp_path / "runs")
    guess = "a reaches 50% — or not"
    result = _cli(
        "experiment", str(spec), "--quick", "--runs-dir", runs, "--guess", guess, "--json"
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output[result.output.index("{") :])
    assert record["guess"] == guess and record["prediction"] is None  # no mechanism for it
    shown = _cli("experiment", str(spec), "--quick", "--runs-dir", runs, "--guess", guess)
    assert shown.exit_code == 0, shown.output
    assert f"Your guess before the runs: {guess}" in shown.output


def test_a_guess_with_resume_or_too_long_is_one_line(tmp_path):
    resumed = _cli("experiment", "dropout", "--resume", "--guess", "x", "--runs-dir", str(tmp_path))
    assert resumed.exit_code == 2 and "a guess is made before the runs" in resumed.output
    long = _cli("experiment", "dropout", "--guess", "x" * 501, "--runs-dir", str(tmp_path))
    assert long.exit_code == 2 and "keep it under 500" in long.output


# ------------------------------------------------------------------------- the recorder
def _tiny(optimizer: str = "sgd"):
    import keras

    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, activation="sigmoid"),
            keras.layers.Dense(5, activation="relu"),
            keras.layers.Dense(3),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1) if optimizer == "sgd" else optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.normal(0, 2, (128, 4)).astype("float32")
    y = np.argmax(x[:, :3] + rng.normal(0, 1, (128, 3)), axis=1)  # learnable, not certain
    return model, x, y


def _direct(model, x, y, batch: int, rate: float) -> dict:
    """What the recorder should find at the model's weights, computed apart: NumPy's forward
    pass and histogram, jax.grad of the compiled loss (`mechanisms.loss`), SGD's step."""
    import jax

    from digitlab.mechanisms.gradient_noise import two_batch_estimate
    from digitlab.mechanisms.loss import training_loss

    w = [np.asarray(v) for v in model.get_weights()]
    sigmoid = 1 / (1 + np.exp(-(x[:256] @ w[0] + w[1])))
    relu = np.maximum(sigmoid @ w[2] + w[3], 0)
    loss = training_loss(model)

    def grad(xs, ys) -> list[np.ndarray]:
        return [np.asarray(g) for g in jax.grad(loss.function)(loss.weights, xs, ys)]

    def layer(tensors) -> list[float]:  # each Dense layer's kernel and bias together
        return [np.sqrt(sum(np.sum(t**2) for t in tensors[i : i + 2])) for i in (0, 2, 4)]

    step = grad(x[:batch], y[:batch])
    batches = [
        np.concatenate([g.ravel() for g in grad(x[k : k + 32], y[k : k + 32])])
        for k in range(0, 128, 32)
    ]

    def simple(rows):
        small = np.mean([r @ r for r in rows])
        mean = np.mean(rows, axis=0)
        trace, norm_sq = two_batch_estimate(32, 32 * len(rows), small, mean @ mean)
        return trace / norm_sq

    left = [simple(batches[:k] + batches[k + 1 :]) for k in range(len(batches))]
    return {
        "sigmoid": sigmoid,
        "relu": relu,
        "gradient_norms": layer(grad(x, y)),
        "update_ratios": [rate * g / n for g, n in zip(layer(step), layer(w), strict=True)],
        "noise": simple(batches),
        "error": np.sqrt(3 * np.var(left)),
    }


def test_the_recorders_values_equal_a_direct_computation():
    from digitlab import fastfit
    from digitlab.mechanisms.recorder import MechanismRecorder

    model, x, y = _tiny()
    recorder = MechanismRecorder(x, y, batch_size=16)
    fastfit.fit(model, x, y, batch_size=16, epochs=1, callbacks=[recorder], verbose=0)
    values, direct = recorder.values, _direct(model, x, y, batch=16, rate=0.1)
    assert values["epochs"] == [0, 1] and values["noise_scale"]["epochs"] == [0, 1]
    first, second, _ = model.layers
    for key in ("gradient_norms", "update_ratios"):
        found = [values[key][layer.name][-1] for layer in model.layers]
        np.testing.assert_allclose(found, direct[key], rtol=1e-4)
    sigmoid = values["activations"][first.name]
    counts, _ = np.histogram(direct["sigmoid"], bins=sigmoid["edges"])
    assert sigmoid["counts"][-1] == counts.tolist()
    saturated = np.mean((direct["sigmoid"] <= 0.01) | (direct["sigmoid"] >= 0.99))
    assert sigmoid["saturated"][-1] == pytest.approx(saturated) and sigmoid["dead"][-1] is None
    relu = values["activations"][second.name]
    assert relu["dead"][-1] == pytest.approx(np.mean((direct["relu"] <= 0).all(axis=0)))
    above = np.mean(direct["relu"] > relu["edges"][-1])
    assert relu["above"][-1] == pytest.approx(above)
    counts, _ = np.histogram(np.clip(direct["relu"], None, relu["edges"][-1]), bins=relu["edges"])
    assert relu["counts"][-1] == counts.tolist()  # beyond the top edge: in the top bin
    noise = values["noise_scale"]
    assert 0 < direct["noise"] < np.inf and 0 < direct["error"] < np.inf
    assert noise["simple"][-1] == pytest.approx(direct["noise"], rel=1e-3)
    assert noise["error"][-1] == pytest.approx(direct["error"], rel=1e-3)


def test_the_update_ratio_is_of_the_optimizers_own_next_step():
    """Adam's first step moves every weight by about its rate (its moments start at 0): the
    ratio is about rate × √(weights) / |w|, whatever the gradient's size."""
    from digitlab import fastfit
    from digitlab.mechanisms.recorder import MechanismRecorder

    model, x, y = _tiny("adam")
    recorder = MechanismRecorder(x, y, batch_size=16)
    fastfit.fit(model, x, y, batch_size=16, epochs=1, callbacks=[recorder], verbose=0)
    kernel = recorder.values["update_ratios"][model.layers[0].name][0]
    keras_rate = float(model.optimizer.learning_rate)
    model_before, _, _ = _tiny("adam")  # the same initial weights (seed 3)
    w = model_before.layers[0].get_weights()
    size = np.sqrt(sum(t.size for t in w)) * keras_rate
    assert kernel == pytest.approx(size / np.sqrt(sum(np.sum(t**2) for t in w)), rel=0.05)


def test_noise_epochs_are_the_start_and_a_geometric_spread():
    from digitlab.mechanisms.recorder import noise_epochs

    assert noise_epochs(10) == [0, 1, 2, 5, 10]
    assert noise_epochs(1) == [0, 1]
    assert noise_epochs(20) == [0, 1, 3, 7, 20]


def test_a_run_keeps_its_record_a_resume_continues_it_and_inspect_draws_it(tmp_path, mnist):
    from digitlab.insight.recording import HISTOGRAMS_PNG, NOT_RECORDED, SIGNALS_PNG
    from digitlab.presets import get_preset
    from digitlab.runs.folder import read_mechanisms
    from digitlab.training import resume, train

    spec = get_preset("seed").replace(
        train={"train_samples": 3000, "validation_split": 0.2, "epochs": 1}
    )
    run = train(
        spec, runs_dir=tmp_path, verbose=0, pictures=False, calibrate=False, mechanisms=True
    )
    first = read_mechanisms(run.path)
    assert first["epochs"] == [0, 1] and first["noise_scale"]["epochs"] == [0, 1]
    run = resume(run, epochs=2, verbose=0)
    again = read_mechanisms(run.path)
    assert again["epochs"] == [0, 1, 2]  # continued, not restarted
    layer = next(iter(first["update_ratios"]))  # "dense", or "dense_4" after other models
    assert again["update_ratios"][layer][:2] == first["update_ratios"][layer]

    result = _cli("inspect", str(run.path), "--count", "200", "--json")
    assert result.exit_code == 0, result.output
    drawn = json.loads(result.output)["training_record"]
    assert [p.rsplit("/", 1)[1] for p in drawn] == [HISTOGRAMS_PNG, SIGNALS_PNG]
    assert all(os.path.getsize(p) > 10_000 for p in drawn)
    page = (run.path / "report.html").read_text()  # the run's report inlines them
    assert 'id="fig-activation_histograms-png"' in page
    assert 'id="fig-training_signals-png"' in page

    bare = train(spec, runs_dir=tmp_path, verbose=0, pictures=False, calibrate=False)
    assert read_mechanisms(bare.path) is None  # by default a run records when it draws
    result = _cli("inspect", str(bare.path), "--count", "200")
    assert result.exit_code == 0 and NOT_RECORDED[:40] in " ".join(result.output.split())


def test_a_damaged_record_is_one_line(tmp_path):
    from digitlab.errors import RunError
    from digitlab.insight.recording import save_recording_pictures

    (tmp_path / "mechanisms.json").write_text('{"epochs": "soon"}')
    with pytest.raises(RunError, match="mechanisms.json is not a training record"):
        save_recording_pictures(SimpleNamespace(path=tmp_path), tmp_path / "out")
    (tmp_path / "mechanisms.json").write_text("[]")
    with pytest.raises(RunError, match="not a JSON object"):
        save_recording_pictures(SimpleNamespace(path=tmp_path), tmp_path / "out")


def test_the_curvature_figure_sets_each_sgd_variant_beside_its_adam_twin():
    """The prediction is for plain SGD; Adam on the same inputs is drawn beside it, unjudged
    (issue 21 §2: its per-parameter step hides most of the conditioning)."""
    from pathlib import Path

    from digitlab.experiments.figures_prediction import prediction_figure

    path = Path(__file__).parent.parent / "docs" / "experiments" / "normalization.json"
    record = ExperimentRecord.model_validate(json.loads(path.read_text()))
    by_name = {v.name: v for v in record.variants}
    order = record.prediction.measured["conditioning"]
    names = sorted(order, key=lambda n: order[n]["top_to_median"])  # std-sgd first
    panel = prediction_figure(record).axes[1]
    drawn = {
        (round(float(x), 2), round(float(y), 6))
        for bar in panel.containers
        for x, y in zip(*bar.lines[0].get_data(), strict=True)
    }
    for i, name in enumerate(names):
        twin = by_name[name.replace("-sgd", "-adam")]
        assert (i, round(by_name[name].final_train_loss.mean, 6)) in drawn
        assert (i + 0.25, round(twin.final_train_loss.mean, 6)) in drawn
    assert "Adam, same inputs (not predicted)" in panel.get_legend_handles_labels()[1]
