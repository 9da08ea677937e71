"""Experiments (issue 11): definitions, statistics, the runner with --quick, resume, the CLI."""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np
import pytest
from typer.testing import CliRunner

from digitlab.errors import SpecError
from digitlab.experiments import conclusions
from digitlab.experiments.definitions import BUILT_IN, load_definition
from digitlab.experiments.schema import Budget, Definition
from digitlab.schema import validate


# ------------------------------------------------------------------------------- statistics
def test_noise_is_no_measurable_difference():
    rng = np.random.default_rng(0)
    a, b = 0.95 + rng.normal(0, 0.004, 5), 0.95 + rng.normal(0, 0.004, 5)
    sentence = conclusions.compare_sentence("x", "base", a, b)
    assert "no measurable difference" in sentence
    assert "Welch" in sentence and "95% CI" in sentence
    assert not conclusions.difference(a, b).measurable


def test_real_difference_is_stated_with_its_uncertainty():
    rng = np.random.default_rng(1)
    b = 0.95 + rng.normal(0, 0.002, 5)
    a = b + 0.02  # two points better, far outside a 0.2-point spread
    d = conclusions.difference(a, b)
    assert d.measurable and d.p < 0.05 and d.low < 0.02 < d.high
    sentence = conclusions.compare_sentence("x", "base", a, b)
    assert sentence.startswith("x has a higher test accuracy than base: +2.00 points")
    assert "no measurable" not in sentence
    worse = conclusions.compare_sentence("y", "base", b - 0.02, b)
    assert "lower test accuracy" in worse


def test_one_seed_claims_nothing():
    sentence = conclusions.compare_sentence("x", "base", [0.99], [0.90])
    assert "one seed: no uncertainty estimate" in sentence
    assert "higher" not in sentence and "lower" not in sentence


def test_conclude_compares_every_variant_with_the_baseline_and_ranks_them():
    rng = np.random.default_rng(2)
    noise = lambda m: list(m + rng.normal(0, 0.002, 4))  # noqa: E731
    results = {
        "base": {"test_accuracy": noise(0.95), "generalization_gap": noise(0.30)},
        "same": {"test_accuracy": noise(0.95), "generalization_gap": noise(0.30)},
        "better": {"test_accuracy": noise(0.97), "generalization_gap": noise(0.10)},
    }
    lines = conclusions.conclude(results, "base")
    text = "\n".join(lines)
    assert "same vs base: no measurable difference in test accuracy" in text
    assert "better has a higher test accuracy than base" in text
    assert "better has a smaller generalisation gap" in text
    assert lines[-1].startswith("Mean test accuracy, best first: better")


def test_summarize_std_is_sample_std_and_zero_for_one_value():
    assert conclusions.summarize([1.0, 3.0])["std"] == pytest.approx(np.sqrt(2))
    assert conclusions.summarize([0.5]) == {"mean": 0.5, "std": 0.0, "values": [0.5]}


# ------------------------------------------------------------------------------ definitions
def test_built_ins_are_the_three_notes():
    assert set(BUILT_IN) == {"dropout", "batch-size", "normalization"}
    dropout = BUILT_IN["dropout"]
    assert {v.name for v in dropout.variants} >= {"notebook-0", "notebook-0.2", "wide-0.5"}
    assert any(v.full_batch for v in BUILT_IN["batch-size"].variants)
    scalings = {v.input_scaling for v in BUILT_IN["normalization"].variants}
    assert scalings == {"unit", "raw", "standardize"}
    for definition in BUILT_IN.values():
        assert definition.quick.epochs == 1 and definition.quick.seeds == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('qestion = "?"', "unknown key 'qestion' (did you mean 'question'?)"),
        (
            'question = "?"\n[budget]\nepochs = 1\ntrain_samples = 100\nsede = 1',
            "unknown key 'sede'",
        ),
        (
            'question = "?"\n[budget]\nepochs = 1\ntrain_samples = 100\n'
            '[[variants]]\nname = "a"\ntrain = {epochs = 3}',
            "'epochs' is set by the experiment's budget",
        ),
        (
            'question = "?"\n[budget]\nepochs = 1\ntrain_samples = 100\n'
            '[[variants]]\nname = "a"\ntrain = {optimiser = "sgd"}',
            "unknown training option 'optimiser' (did you mean 'optimizer'?)",
        ),
        (
            'question = "?"\n[budget]\nepochs = 1\ntrain_samples = 100\n'
            '[[variants]]\nname = "a"\npreset = "mpl"',
            "unknown preset 'mpl' (did you mean 'mlp'?)",
        ),
        (
            'question = "?"\n[budget]\nepochs = "ten"\ntrain_samples = 100\n'
            '[[variants]]\nname = "a"',
            "'budget.epochs' must be a whole number",
        ),
    ],
)
def test_user_definition_errors_are_one_line(tmp_path, text, message):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(SpecError) as info:
        load_definition(path)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_experiment_suggests_one():
    with pytest.raises(SpecError, match="did you mean 'dropout'"):
        load_definition("dropuot")


def test_variant_specs_scale_inputs_and_batches():
    from digitlab.experiments.plan import variant_spec

    norm, budget = BUILT_IN["normalization"], BUILT_IN["normalization"].budget
    by_name = {v.name: v for v in norm.variants}
    raw = variant_spec(norm, by_name["scale-raw"], budget, 2, "same")
    assert raw.layers[0] == {"type": "Rescaling", "scale": 255.0}
    assert raw.train.seed == 2 and raw.train.epochs == budget.epochs
    std = variant_spec(norm, by_name["scale-standardize"], budget, 0, "same", (0.13, 0.31))
    assert std.layers[0]["offset"] == pytest.approx(-0.13 / 0.31)
    batch = BUILT_IN["batch-size"]
    full = next(v for v in batch.variants if v.full_batch)
    assert variant_spec(batch, full, batch.budget, 0, "same").train.batch_size == 5000
    b128 = next(v for v in batch.variants if v.name == "batch-128")
    assert variant_spec(batch, b128, batch.budget, 0, "same").train.learning_rate == 0.01
    scaled = variant_spec(batch, b128, batch.budget, 0, "linear")
    assert scaled.train.learning_rate == pytest.approx(0.01 * 128 / 32)


def test_a_variant_on_a_preset_trains_at_the_presets_batch_size_unless_it_sets_one():
    from digitlab.experiments.plan import variant_spec
    from digitlab.experiments.schema import Variant
    from digitlab.presets import get_preset

    definition = BUILT_IN["dropout"]
    for preset in ("mlp", "fast", "seed"):
        variant = Variant(name=preset, preset=preset)
        spec = variant_spec(definition, variant, definition.budget, 0, "same")
        assert spec.train.batch_size == get_preset(preset).train.batch_size
    assert get_preset("mlp").train.batch_size == 128 and get_preset("fast").train.batch_size == 256
    own = Variant(name="own", preset="mlp", train={"batch_size": 64})
    assert variant_spec(definition, own, definition.budget, 0, "same").train.batch_size == 64


def test_the_plan_lists_the_cells_still_to_train_seed_by_seed():
    from digitlab.experiments.plan import cells_to_do, epochs_to_do, variant_spec

    definition = BUILT_IN["dropout"]
    names = [v.name for v in definition.variants]
    cells = cells_to_do(definition, 2, {(names[0], 0)}, {(names[1], 1)})
    assert [(v.name, s) for v, s in cells] == [
        *((n, 0) for n in names[1:]),
        *((n, 1) for n in names if n != names[1]),
    ]
    budget = definition.budget
    assert epochs_to_do(cells, budget, {(names[1], 0): 3}) == len(cells) * budget.epochs - 3
    # the runner builds each seed's spec from the seed-0 one
    variant = definition.variants[1]
    spec = variant_spec(definition, variant, budget, 0, "same")
    assert spec.replace(train={"seed": 2}) == variant_spec(definition, variant, budget, 2, "same")


def test_budget_overrides_are_validated():
    from digitlab.experiments.plan import make_budget

    budget = make_budget(BUILT_IN["dropout"], False, seeds=5, epochs=None, train_samples=None)
    assert budget.seeds == 5 and budget.epochs == BUILT_IN["dropout"].budget.epochs
    with pytest.raises(SpecError, match="'seeds' must be at least 1"):
        make_budget(BUILT_IN["dropout"], False, seeds=0)
    assert Budget(epochs=1, train_samples=600, validation_split=0.2).fit_samples == 480


# ----------------------------------------------------------------------- activation statistics
def test_layer_statistics_find_saturated_and_dead_units():
    import keras

    from digitlab.experiments.callbacks import layer_statistics

    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, activation="sigmoid"),
            keras.layers.Dense(2, activation="relu"),
            keras.layers.Dense(2, activation="sigmoid"),
        ]
    )
    first, second, _ = model.layers
    first.set_weights([np.full((4, 3), 100.0, "float32"), np.zeros(3, "float32")])
    second.set_weights([np.array([[1, -1]] * 3, "float32"), np.array([0, -1], "float32")])
    x = np.linspace(0.5, 1, 20, dtype="float32").reshape(5, 4)
    stats = layer_statistics(model, x)
    assert list(stats) == ["1 sigmoid", "2 relu"]  # the output layer isn't hidden
    assert stats["1 sigmoid"]["saturated"] == 1.0  # pre-activations of 200+: all at 1
    assert stats["1 sigmoid"]["p15"] > 100
    assert stats["2 relu"]["dead"] == 0.5  # the second unit is negative on every digit


# ----------------------------------------------------------------------------- the runner
def _check_folder(outcome, definition):
    folder, record = outcome.folder, outcome.record
    assert folder.parent.name == "experiments" and folder.name.endswith(definition.name)
    data = json.loads((folder / "experiment.json").read_text())
    for key in ("name", "question", "seeds", "budget", "variants", "conclusion", "statistics"):
        assert key in data
    assert data["status"] == "complete" and data["seeds"] == [0]
    assert data["budget"]["epochs"] == 1
    assert data["budget"]["train_samples"] == definition.quick.train_samples
    assert len(data["variants"]) == len(definition.variants)
    from digitlab.runs import read_run

    for variant in data["variants"]:
        for key in ("test_accuracy", "final_train_loss", "final_val_loss", "generalization_gap"):
            assert set(variant[key]) == {"mean", "std", "values", "missing"}
        assert variant["updates"] >= 1 and len(variant["runs"]) == 1
        run = read_run(folder / "runs" / variant["runs"][0])  # a normal, complete run
        assert run.status == "complete" and run.spec.name == variant["name"]
        assert run.metrics.test_accuracy == variant["test_accuracy"]["values"][0]
        gap = variant["final_val_loss"]["mean"] - variant["final_train_loss"]["mean"]
        assert variant["generalization_gap"]["mean"] == pytest.approx(gap)
    assert record.conclusion and "one seed: no uncertainty estimate" in record.conclusion[0]
    for plot in data["plots"]:
        assert (folder / plot).stat().st_size > 1000
    return data


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dropout", "normalization"])
def test_quick_experiment_writes_runs_record_and_plots(tmp_path, name, mnist):
    from digitlab.experiments.runner import run_experiment

    definition = BUILT_IN[name]
    outcome = run_experiment(definition, quick=True, runs_dir=tmp_path, live=False)
    data = _check_folder(outcome, definition)
    assert set(data["plots"]) >= {"loss.png", "accuracy.png"}
    if name == "normalization":
        raw = next(v for v in data["variants"] if v["name"] == "scale-raw")
        (stats,) = raw["activations"].values()
        assert list(stats) == ["1 sigmoid", "2 relu", "3 relu"]
        assert len(stats["1 sigmoid"]["p50"]) == 2  # before training and after the epoch
        assert stats["1 sigmoid"]["saturated"][-1] > 0.5  # raw 0–255 pixels saturate it
        assert "activations.png" in data["plots"]


def test_interrupted_experiment_resumes_only_what_is_missing(tmp_path, monkeypatch, mnist):
    """batch-size --quick, Ctrl-C while its third run loads its data (before the fit, where
    `training.train` clears its own stop flag: that Ctrl-C used to be lost); --resume
    continues the interrupted run and trains the two never started."""
    from digitlab import training
    from digitlab.experiments.runner import run_experiment
    from digitlab.runs import read_run

    real_train, calls = training.train, []

    def ctrl_c_on_third(*args, **kwargs):
        calls.append(kwargs["name"])
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, between two fits
        return real_train(*args, **kwargs)

    monkeypatch.setattr(training, "train", ctrl_c_on_third)
    definition = BUILT_IN["batch-size"]
    first = run_experiment(definition, quick=True, runs_dir=tmp_path, live=False)
    assert first.interrupted and len(first.trained) == 3
    record = json.loads((first.folder / "experiment.json").read_text())
    assert record["status"] == "interrupted"
    statuses = sorted(read_run(p).status for p in (first.folder / "runs").iterdir())
    assert statuses == ["complete", "complete", "interrupted"]
    assert sum(len(v["test_accuracy"]["values"]) for v in record["variants"]) == 2

    second = run_experiment(definition, resume="latest", runs_dir=tmp_path, live=False)
    assert second.folder == first.folder and not second.interrupted
    assert len(second.trained) == 3 and first.trained[2] in second.trained  # resumed in place
    assert len(calls) == 5  # two new runs; the interrupted one was continued, not restarted
    data = _check_folder(second, definition)
    assert {"loss.png", "accuracy.png"} <= set(data["plots"])
    assert len(list((first.folder / "runs").iterdir())) == 5
    report = (first.folder / "report.html").read_text()
    for variant in data["variants"]:
        assert f"runs/{variant['runs'][0]}/report.html" in report  # links to each run

    third = run_experiment(definition, resume=first.folder, runs_dir=tmp_path, live=False)
    assert third.trained == [] and third.record.status == "complete"  # nothing missing


_BOOM = {  # plain SGD at rate 100 on a squared error: the loss overflows in the first epoch
    "name": "boom",
    "train": {"optimizer": "sgd", "learning_rate": 100.0, "loss": "mean_squared_error"},
    "layers": [
        {"type": "Dense", "units": 100, "activation": "relu"},
        {"type": "Dense", "units": 100, "activation": "relu"},
        {"type": "Dense", "units": 10, "activation": "linear"},
    ],
}


def test_a_diverging_cell_is_recorded_as_diverged_by_its_error_type(tmp_path, monkeypatch, mnist):
    from digitlab import training
    from digitlab.errors import DivergedError
    from digitlab.experiments.runner import run_experiment

    real_train, raised = training.train, []

    def train(*args, **kwargs):
        try:
            return real_train(*args, **kwargs)
        except Exception as exc:
            raised.append(exc)
            raise

    monkeypatch.setattr(training, "train", train)
    definition = validate(
        Definition,
        {
            "name": "diverge",
            "question": "Does rate 100 diverge?",
            "budget": {"epochs": 1, "train_samples": 300, "seeds": 1},
            "variants": [{"name": "ok"}, _BOOM],
        },
        "test",
    )
    outcome = run_experiment(definition, runs_dir=tmp_path, live=False)
    assert [type(exc) for exc in raised] == [DivergedError]
    assert isinstance(raised[0], SpecError)  # catchers of SpecError still catch it
    ok, boom = outcome.record.variants
    assert boom.diverged_seeds == (0,) and boom.runs == () and ok.diverged_seeds == ()
    assert outcome.record.status == "complete" and len(ok.runs) == 1
    assert outcome.record.conclusion[0].startswith("boom diverged (the loss became NaN)")


# ---------------------------------------------------------------------------------- the CLI
def _cli(*args, env=None):
    from digitlab.cli import app

    return CliRunner().invoke(app, list(args), env=env)


def test_cli_lists_experiments():
    result = _cli("experiment", "list", "--json")
    assert result.exit_code == 0
    listed = json.loads(result.output)
    assert [e["name"] for e in listed] == ["dropout", "batch-size", "normalization"]
    assert all(e["budget"]["epochs"] >= 1 for e in listed)


def test_cli_refuses_bad_input_in_one_line(tmp_path):
    result = _cli("experiment", "dropuot")
    assert result.exit_code == 2 and "did you mean 'dropout'" in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text('question = "?"\nvariant = 3\n')
    result = _cli("experiment", str(bad))
    assert result.exit_code == 2 and "unknown key 'variant'" in result.output
    result = _cli("experiment", "dropout", "--resume", "--runs-dir", str(tmp_path))
    assert result.exit_code == 2 and "no dropout experiment to resume" in result.output
    result = _cli("experiment", "dropout", "somewhere")
    assert result.exit_code == 2 and "only --resume takes a folder" in result.output


def test_cli_runs_a_user_toml_experiment(tmp_path, mnist):
    spec = tmp_path / "lr.toml"
    spec.write_text(
        'question = "Does a larger Adam rate help?"\n'
        "[budget]\nepochs = 1\ntrain_samples = 500\nseeds = 2\n"
        '[[variants]]\nname = "default"\n'
        '[[variants]]\nname = "fast"\ntrain = {learning_rate = 0.01}\n'
        '[[variants]]\nname = "boom"\n'  # diverges: recorded as a result, the rest goes on
        'train = {optimizer = "sgd", learning_rate = 100.0, loss = "mean_squared_error"}\n'
        'layers = [{type = "Dense", units = 100, activation = "relu"},\n'
        '  {type = "Dense", units = 100, activation = "relu"},\n'
        '  {type = "Dense", units = 10, activation = "linear"}]\n'
    )
    result = _cli("experiment", str(spec), "--runs-dir", str(tmp_path / "runs"), "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output[result.output.index("{") :])
    assert record["name"] == "lr" and record["seeds"] == [0, 1]
    fast = record["variants"][1]
    assert len(fast["runs"]) == 2 and fast["learning_rate"] == 0.01
    assert len(fast["test_accuracy"]["values"]) == 2
    assert any("fast vs default" in line for line in record["conclusion"])
    boom = record["variants"][2]
    assert boom["diverged_seeds"] == [0, 1] and boom["runs"] == []
    assert boom["test_accuracy"] == {"mean": None, "std": None, "values": []}
    assert record["conclusion"][0].startswith("boom diverged (the loss became NaN) with seeds 0, 1")
    assert "Welch" in record["statistics"]


def test_definition_round_trips_through_the_record():
    definition = BUILT_IN["normalization"]
    again = validate(Definition, definition.model_dump(mode="json"), "record")
    assert again == definition


def test_a_run_too_weak_to_calibrate_is_still_saved(tmp_path, mnist):
    """Calibration needs 100 correctly classified held-out digits; a tiny run (an experiment's
    --quick, or `train --train-samples 300`) used to lose its finished training to a
    RunError there. It is saved uncalibrated instead, like a run from before calibration."""
    from digitlab.presets import get_preset
    from digitlab.training import train

    spec = get_preset("seed").replace(
        train={"train_samples": 300, "validation_split": 0.2, "epochs": 1}
    )
    run = train(spec, runs_dir=tmp_path, verbose=0, pictures=False)
    assert run.status == "complete" and run.metrics.test_accuracy is not None
    assert run.config.thresholds == {}


# ---------------------------------------------------------------------------------- the views
def test_views_print_definitions_and_a_record(tmp_path):
    from rich.console import Console

    from digitlab.experiments.schema import ExperimentRecord
    from digitlab.experiments.views import definitions_json, print_definitions, print_record

    assert definitions_json() == json.loads(_cli("experiment", "list", "--json").output)
    console = Console(record=True, width=200)
    print_definitions(console, tmp_path)
    text = console.export_text()
    assert "20 epochs, 6,000 digits, 3 seeds" in text and "experiment folder" not in text
    summary = {"mean": 0.9, "std": 0.01, "values": [0.89, 0.91]}
    empty = {"mean": None, "std": None, "values": []}
    record = ExperimentRecord.model_validate(
        {
            "name": "x", "question": "?", "status": "complete", "created": "2024-01-01T00:00:00",
            "updated": "2024-01-01T00:00:00", "seeds": [0, 1], "budget": {},
            "learning_rate_policy": "same", "baseline": "a", "conclusion": ["a wins."],
            "statistics": "Welch",
            "variants": [
                {"name": "a", "spec": {}, "runs": [], "seeds": [], "batch_size": 32,
                 "test_accuracy": summary, "final_train_loss": empty,
                 "final_val_loss": summary, "generalization_gap": empty, "seconds": summary,
                 "updates": 1234},
            ],
        }
    )  # fmt: skip
    console = Console(record=True, width=200)
    print_record(console, record, tmp_path / "exp")
    text = console.export_text()
    assert "90.00% ± 1.00%" in text and "0.900" in text and "1,234" in text and "–" in text
    assert "- a wins." in text and f"experiment: {tmp_path / 'exp'}" in text


# ------------------------------------------------------------------------- signals, parent death
def test_stop_on_signals_yields_an_event_a_signal_sets_and_nothing_clears():
    from digitlab import interrupts

    before = signal.getsignal(signal.SIGTERM)
    with interrupts.stop_on_signals() as stop:
        assert not stop.is_set() and not interrupts.requested.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        with interrupts.stop_on_signals() as inner:  # a fit inside: clears `requested` only
            assert not interrupts.requested.is_set() and not inner.is_set()
        assert stop.is_set()
    assert signal.getsignal(signal.SIGTERM) == before
    interrupts.requested.clear()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_die_with_parent_calls_orphaned_only_when_the_parent_is_gone():
    from digitlab.interrupts import die_with_parent

    called = []
    # signal 0 clears the parent-death signal: safe to arm in the test process itself
    die_with_parent(os.getppid(), 0, lambda: called.append("orphan"))()
    assert called == []
    die_with_parent(-1, 0, lambda: called.append("orphan"))()  # not our parent: "gone"
    assert called == ["orphan"]
