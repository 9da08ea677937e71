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
def test_summarize_std_is_sample_std_and_zero_for_one_value():
    assert conclusions.summarize([1.0, 3.0])["std"] == pytest.approx(np.sqrt(2))
    assert conclusions.summarize([0.5]) == {"mean": 0.5, "std": 0.0, "values": [0.5]}


# ------------------------------------------------------------------------------ definitions
def test_built_ins_are_the_three_notes_and_the_size_sweep():
    assert set(BUILT_IN) == {"dropout", "batch-size", "normalization", "dropout-size"}
    dropout = BUILT_IN["dropout"]
    assert {v.name for v in dropout.variants} >= {"notebook-0", "notebook-0.2", "wide-0.5"}
    assert any(v.full_batch for v in BUILT_IN["batch-size"].variants)
    scalings = {v.input_scaling for v in BUILT_IN["normalization"].variants}
    assert scalings == {"unit", "raw", "standardize"}
    for definition in BUILT_IN.values():
        assert definition.quick.epochs == 1 and definition.quick.seeds == 1


@pytest.mark.parametrize("name", ["dropout", "batch-size", "normalization"])
def test_built_in_definitions_validate_and_their_claims_name_their_variants(name):
    definition = BUILT_IN[name]
    again = validate(Definition, definition.model_dump(mode="json"), name)
    assert again == definition
    names = {v.name for v in definition.variants}
    assert len(definition.claims) >= 3
    for claim in definition.claims:
        assert set(claim.variants) <= names and len(set(claim.variants)) == len(claim.variants)
        assert claim.anchor and claim.statement and claim.effect > 0
    for pair in definition.pairs:
        assert set(pair) <= names
    # no description counts digits: the budget decides how many a run trains on
    assert "5,000" not in json.dumps(definition.model_dump(mode="json"))


def _layers_without_units(layers):
    return [{k: v for k, v in layer.items() if k != "units"} for layer in layers]


def test_dropouts_wide_variants_differ_from_the_notebooks_only_in_units():
    from digitlab.presets import get_preset

    by_name = {v.name: v for v in BUILT_IN["dropout"].variants}
    assert list(by_name["notebook-0.2"].layers) == list(get_preset("seed").layers)
    for rate in ("0", "0.5"):
        narrow, wide = by_name[f"notebook-{rate}"].layers, by_name[f"wide-{rate}"].layers
        assert _layers_without_units(narrow) == _layers_without_units(wide)
        units = [(a.get("units"), b.get("units")) for a, b in zip(narrow, wide, strict=True)]
        assert units[-1] == (10, 10)  # the output layer is the same
        hidden = [pair for pair in units[:-1] if pair != (None, None)]
        assert len(hidden) == 3 and all(n == 100 and w > n for n, w in hidden)
        assert by_name[f"notebook-{rate}"].train == by_name[f"wide-{rate}"].train


def test_batch_size_variants_are_plain_sgd_without_dropout_each_with_a_grid():
    definition = BUILT_IN["batch-size"]
    grids = [set(v.learning_rates) for v in definition.variants]
    assert set.intersection(*grids), "a rate in every grid: the 'at one rate' view"
    for variant in definition.variants:
        assert all(layer["type"] != "Dropout" for layer in variant.layers)
        assert variant.train["optimizer"] == "sgd" and len(variant.learning_rates) >= 3
        large = variant.full_batch or variant.train["batch_size"] >= 1024
        assert (variant.min_updates is not None) == large
        assert (variant.train.get("warmup_epochs", 0) > 0) == large
    assert definition.target == 0.9 and definition.matched_loss is not None


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
    raw = variant_spec(norm, by_name["raw-adam"], budget, 2, "same")
    assert raw.layers[0] == {"type": "Rescaling", "scale": 255.0}
    assert raw.train.seed == 2 and raw.train.epochs == budget.epochs
    mean, std = np.array([0.0, 0.5, 0.2]), np.array([1.0, 0.25, 0.5])  # per pixel
    std_spec = variant_spec(norm, by_name["std-adam"], budget, 0, "same", (mean, std))
    assert std_spec.layers[0]["scale"] == pytest.approx([1.0, 4.0, 2.0])
    assert std_spec.layers[0]["offset"] == pytest.approx([0.0, -2.0, -0.4])
    batch = BUILT_IN["batch-size"]
    full = next(v for v in batch.variants if v.full_batch)
    assert variant_spec(batch, full, batch.budget, 0, "same").train.batch_size == 5000
    b128 = next(v for v in batch.variants if v.name == "batch-128")
    assert variant_spec(batch, b128, batch.budget, 0, "same").train.learning_rate == 0.3
    scaled = variant_spec(batch, b128, batch.budget, 0, "linear")
    assert scaled.train.learning_rate == pytest.approx(0.3 * 128 / 32)
    tuned = variant_spec(batch, b128, batch.budget, 0, "tuned", learning_rate=1.0)
    assert tuned.train.learning_rate == 1.0


def test_per_pixel_standardization_centres_each_pixel_and_spares_constant_ones():
    from digitlab.experiments.plan import standardization

    pixels = np.array([[0.0, 1.0, 0.5], [0.0, 0.0, 0.5], [0.0, 0.5, 0.5]])
    mean, std = standardization(pixels, (3,))
    assert mean == pytest.approx([0.0, 0.5, 0.5])
    assert std == pytest.approx([1.0, np.std([1.0, 0.0, 0.5]), 1.0])  # constant: only centred
    standardised = (pixels - mean) / std
    assert standardised[:, 1].mean() == pytest.approx(0)
    assert standardised[:, 1].std() == pytest.approx(1)


def test_linear_policy_scales_by_the_batch_actually_used():
    """With 480 digits to fit, batches of 1024 and the full batch are both 480 digits: one
    update per epoch, so one rate (0.3 × 480 / 32), not 0.3 × 1024 / 32."""
    from digitlab.experiments.plan import make_budget, steps_per_epoch, variant_spec

    batch = BUILT_IN["batch-size"]
    budget = make_budget(batch, False, train_samples=600, epochs=1)
    assert budget.fit_samples == 500
    by_name = {v.name: v for v in batch.variants}
    rates = {
        name: variant_spec(batch, by_name[name], budget, 0, "linear").train.learning_rate
        for name in ("batch-1024", "full-batch", "batch-128")
    }
    assert rates["batch-1024"] == pytest.approx(0.3 * 500 / 32) == rates["full-batch"]
    assert rates["batch-128"] == pytest.approx(0.3 * 128 / 32)
    assert steps_per_epoch(1024, budget.fit_samples) == steps_per_epoch(500, 500) == 1


def test_min_updates_raises_a_variants_epochs_but_not_a_smoke_runs():
    from digitlab.experiments.plan import updates_per_run, variant_epochs, variant_spec
    from digitlab.experiments.schema import Variant

    definition, budget = BUILT_IN["dropout"], Budget(epochs=2, train_samples=1250)
    variant = Variant(name="big", train={"batch_size": 256}, min_updates=30)
    assert variant_epochs(variant, 256, budget) == 8  # 1,000 digits: 4 updates an epoch
    assert variant_epochs(variant, 256, budget, quick=True) == 2
    assert variant_epochs(Variant(name="small"), 32, budget) == 2
    spec = variant_spec(definition, variant, budget, 0, "same")
    assert spec.train.epochs == 8 and updates_per_run(spec) == 32


def test_learning_rates_are_tuned_only_under_the_tuned_policy_and_not_when_quick():
    from digitlab.experiments.plan import choose_rate, tunes, tuning_to_do

    batch = BUILT_IN["batch-size"]
    b32 = next(v for v in batch.variants if v.name == "batch-32")
    assert tunes(batch, b32, "tuned", quick=False)
    assert not tunes(batch, b32, "same", False) and not tunes(batch, b32, "linear", False)
    assert not tunes(batch, b32, "tuned", quick=True)
    todo = tuning_to_do(
        batch, "tuned", False, done=[("batch-32", 0.3)], diverged=[("batch-1", 0.3)]
    )
    assert len(todo) == sum(len(v.learning_rates) for v in batch.variants) - 2
    assert ("batch-32", 0.3) not in {(v.name, r) for v, r in todo}
    points = [
        {"learning_rate": 0.1, "val_accuracy": 0.91, "val_loss": 0.3},
        {"learning_rate": 0.3, "val_accuracy": 0.93, "val_loss": 0.25},
        {"learning_rate": 1.0, "val_accuracy": 0.93, "val_loss": 0.2},  # ties: lower loss
        {"learning_rate": 3.0, "diverged": True},
    ]
    assert choose_rate(points) == 1.0
    assert choose_rate(points[:2]) == 0.3
    assert choose_rate([{"learning_rate": 3.0, "diverged": True}]) is None


def _compiled_rate(spec):
    """The learning rate (a number or a schedule) `compile_model` gave the optimizer, read
    back through the optimizer's config as Keras saves it."""
    import keras

    from digitlab.model import build_model, compile_model

    model = build_model(spec)
    compile_model(model, spec)
    rate = model.optimizer.get_config()["learning_rate"]
    return rate if isinstance(rate, float) else keras.optimizers.schedules.deserialize(rate)


def test_warm_up_ramps_the_rate_linearly_then_holds_or_decays_it():
    from digitlab.presets import get_preset

    spec = get_preset("seed").replace(
        train={"optimizer": "sgd", "learning_rate": 0.4, "batch_size": 100, "epochs": 5,
               "train_samples": 1000, "warmup_epochs": 2}
    )  # fmt: skip
    schedule = _compiled_rate(spec)
    rates = [float(schedule(step)) for step in (0, 5, 10, 20, 30, 49)]  # 10 updates an epoch
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.4, 0.4, 0.4])
    cosine = _compiled_rate(spec.replace(train={"learning_rate_schedule": "cosine"}))
    assert float(cosine(10)) == pytest.approx(0.2) and float(cosine(20)) == pytest.approx(0.4)
    assert float(cosine(35)) == pytest.approx(0.2, abs=1e-6) and float(cosine(50)) < 1e-6
    assert _compiled_rate(spec.replace(train={"warmup_epochs": 0})) == pytest.approx(0.4)


def test_the_plan_lists_the_cells_still_to_train_seed_by_seed():
    from digitlab.experiments.plan import cells_to_do, epochs_to_do, variant_spec

    definition = BUILT_IN["dropout"]
    names = [v.name for v in definition.variants]
    cells = cells_to_do(definition, 2, {(names[0], 0)}, {(names[1], 1)})
    assert [(v.name, s) for v, s in cells] == [
        *((n, 0) for n in names[1:]),
        *((n, 1) for n in names if n != names[1]),
    ]
    untrained = cells_to_do(definition, 1, set(), set(), untrainable=[names[2]])
    assert [v.name for v, _ in untrained] == [n for n in names if n != names[2]]
    budget = definition.budget
    specs = {v.name: variant_spec(definition, v, budget, 0, "same") for v in definition.variants}
    assert epochs_to_do(cells, specs, {(names[1], 0): 3}) == len(cells) * budget.epochs - 3
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


# --------------------------------------------------------------------------- to the target
def _curve(val_accuracy, inference_loss=None, val_loss=None, updates=10, seconds=2.0):
    n = len(val_accuracy)
    return {
        "val_accuracy": list(val_accuracy),
        "inference_loss": list(inference_loss or [1.0] * n),
        "val_loss": list(val_loss or [1.2] * n),
        "epoch_seconds": [seconds] * n,
        "updates_per_epoch": updates,
        "examples_per_epoch": 480,
    }


def test_time_to_target_counts_to_the_end_of_the_first_epoch_that_reaches_it():
    from digitlab.experiments.results import to_target

    curve = _curve([0.5, 0.88, 0.91, 0.85, 0.95], updates=15, seconds=1.5)
    assert to_target(curve, 0.9) == {
        "epochs_to_target": 3.0,
        "updates_to_target": 45.0,
        "examples_to_target": 1440.0,
        "seconds_to_target": 4.5,
    }
    assert to_target(curve, 0.5)["epochs_to_target"] == 1.0  # reached at once: one epoch
    assert set(to_target(curve, 0.99).values()) == {None}  # never reached
    assert set(to_target(curve, None).values()) == {None}  # no target


def test_the_gap_is_read_where_the_training_loss_first_reaches_the_matched_loss():
    from digitlab.experiments.results import gap_at_matched_loss

    curve = _curve([0.5] * 4, inference_loss=[0.9, 0.5, 0.28, 0.1], val_loss=[1.0, 0.6, 0.4, 0.5])
    assert gap_at_matched_loss(curve, 0.3) == pytest.approx(0.4 - 0.28)
    assert gap_at_matched_loss(curve, 0.05) is None and gap_at_matched_loss(curve, None) is None


def test_missing_runs_are_counted_in_a_summary():
    from digitlab.experiments.results import summary

    assert summary([3.0, None, 5.0, float("nan")]) == {
        "mean": 4.0, "std": pytest.approx(np.sqrt(2)), "values": [3.0, 5.0], "missing": 2
    }  # fmt: skip


def test_an_automatic_target_is_never_near_chance():
    from digitlab.experiments.results import target_accuracy

    definition = validate(
        Definition,
        {"name": "t", "question": "?", "budget": {"epochs": 1, "train_samples": 100},
         "variants": [{"name": "a"}, {"name": "b"}]},
        "test",
    )  # fmt: skip

    def finals(a, b):
        return {"a": [_curve([0.1, a])], "b": [_curve([0.1, b])]}

    assert target_accuracy(definition, finals(0.95, 0.5), 10) == pytest.approx(0.855)  # 90%
    # two classes: 90% of a best of 0.62 is 0.558, within half the way from chance (0.5) to it
    assert target_accuracy(definition, finals(0.62, 0.52), 2) == pytest.approx(0.56)
    assert target_accuracy(definition, finals(0.15, 0.11), 10) is None  # too near chance
    fixed = definition.model_copy(update={"target": 0.9})
    assert target_accuracy(fixed, finals(0.15, 0.11), 10) == 0.9  # declared: as declared


# ------------------------------------------------------------------------------- progress
def test_the_progress_bar_counts_each_epoch_at_its_estimated_cost():
    """A wide network's epoch weighs more than the notebook's, so the ETA (cost left over
    cost done per second) doesn't jump when the wide runs start."""
    from rich.console import Console

    from digitlab.experiments.progress import Progress, epoch_cost

    notebook, wide = epoch_cost(99_710, 5000, 157), epoch_cost(932_362, 5000, 157)
    assert wide > 5 * notebook
    assert epoch_cost(99_710, 5000, 5000) > epoch_cost(99_710, 5000, 157)  # per update too
    console = Console(file=open(os.devnull, "w"), force_terminal=True)  # noqa: SIM115
    with Progress(console, 2 * notebook + 2 * wide, 4, 2, live=True) as progress:
        progress.advance(notebook)
        progress.advance(notebook)
        (task,) = progress.bar.tasks
        assert task.completed == pytest.approx(2 * notebook) and task.fields["epochs"] == "2/4"
        assert task.percentage < 20  # two of four epochs, but the cheap ones
    console.file.close()


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
    assert record.smoke and data["smoke"] is True  # a --quick run: a smoke run
    assert "smoke run" in record.answer[0] and "smoke run" in record.conclusion[0]
    assert all(claim.verdict == "not tested" for claim in record.claims)
    for variant in data["variants"]:  # the training digits, dropout off, every epoch
        run = read_run(folder / "runs" / variant["runs"][0])
        assert len(run.history["inference_loss"]) == len(run.history["val_loss"]) == 1
        assert variant["train_accuracy"]["values"] == run.history["inference_accuracy"]
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
        raw = next(v for v in data["variants"] if v["name"] == "raw-adam")
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
    for variant in data["variants"]:  # a smoke run links each run's folder, drawing no report
        assert f"runs/{variant['runs'][0]}" in report
        assert not (first.folder / "runs" / variant["runs"][0] / "report.html").exists()

    third = run_experiment(definition, resume=first.folder, runs_dir=tmp_path, live=False)
    assert third.trained == [] and third.record.status == "complete"  # nothing missing


_TUNED = {
    "name": "tuned",
    "question": "Which rate?",
    "budget": {"epochs": 2, "train_samples": 300, "seeds": 1},  # 240 digits to fit
    "variants": [
        {  # 1e-4 barely moves in 16 updates, 100 diverges (as _BOOM below)
            "name": "sgd",
            "train": {"optimizer": "sgd", "loss": "mean_squared_error"},
            "layers": [
                {"type": "Dense", "units": 100, "activation": "relu"},
                {"type": "Dense", "units": 100, "activation": "relu"},
                {"type": "Dense", "units": 10, "activation": "linear"},
            ],
            "learning_rates": [100.0, 0.1, 1e-4],
        },
        {"name": "big", "train": {"batch_size": 128}, "min_updates": 6},  # 2 updates an epoch
    ],
}


def test_tuning_picks_the_best_rate_records_the_grid_and_a_resume_never_retunes(
    tmp_path, monkeypatch, mnist
):
    """Ctrl-C while the second rate's run loads its data; --resume continues that run,
    tries the third rate, then trains the seeds at the chosen rate; a second --resume with
    --seeds 2 trains only seed 1: no rate is tuned again, the diverged one included."""
    from digitlab import training
    from digitlab.experiments.plan import TUNING_SEED
    from digitlab.experiments.runner import run_experiment
    from digitlab.runs import read_run
    from digitlab.runs.folder import read_mechanisms

    real_train, real_resume, calls, resumed = training.train, training.resume, [], []

    def train(*args, **kwargs):
        calls.append(kwargs["name"])
        if kwargs["name"] == "sgd-lr0.1" and calls.count("sgd-lr0.1") == 1:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, before its fit
        return real_train(*args, **kwargs)

    def resume(run, **kwargs):
        resumed.append(run.name)
        return real_resume(run, **kwargs)

    monkeypatch.setattr(training, "train", train)
    monkeypatch.setattr(training, "resume", resume)
    definition = validate(Definition, _TUNED, "test")
    first = run_experiment(definition, runs_dir=tmp_path, live=False)
    assert first.interrupted and calls == ["sgd-lr0.0001", "sgd-lr0.1"]
    assert [
        p["learning_rate"] for p in first.record.variants[0].model_dump()["learning_rate_grid"]
    ] == [1e-4]

    second = run_experiment(definition, resume="latest", runs_dir=tmp_path, live=False)
    assert not second.interrupted and len(resumed) == 1 and "lr0.1" in resumed[0]
    assert calls[2:] == ["sgd-lr100", "sgd-seed0", "big-seed0"]
    sgd, big = second.record.variants
    grid = {p.learning_rate: p for p in sgd.learning_rate_grid}
    assert list(grid) == [1e-4, 0.1, 100.0] and grid[100.0].diverged and grid[100.0].run is None
    tried = [p for p in grid.values() if not p.diverged]
    best = max(tried, key=lambda p: p.val_accuracy)
    assert sgd.learning_rate == best.learning_rate and best.val_accuracy > 0.1
    for point in tried:  # ordinary runs in runs/, at the tuning seed
        run = read_run(second.folder / "runs" / point.run)
        assert (
            run.spec.train.seed == TUNING_SEED
            and run.spec.train.learning_rate == point.learning_rate
        )
        assert run.history["val_accuracy"][-1] == pytest.approx(point.val_accuracy)
    (seed_run,) = sgd.runs
    assert (
        read_run(second.folder / "runs" / seed_run).spec.train.learning_rate == best.learning_rate
    )
    assert big.learning_rate_grid == () and big.epochs == 3 and big.updates == 6  # min_updates
    assert len(read_run(second.folder / "runs" / big.runs[0]).history["loss"]) == 3
    assert any(
        "Learning rates chosen on the validation digits" in line
        for line in second.record.conclusion
    )
    # seed 0 of each variant records its mechanisms, drawn side by side; tuning runs don't
    for name in (seed_run, big.runs[0]):
        assert read_mechanisms(second.folder / "runs" / name)["epochs"][0] == 0
    assert all(read_mechanisms(second.folder / "runs" / p.run) is None for p in tried)
    assert {"mechanisms.png", "activation_histograms.png"} <= set(second.record.plots)

    third = run_experiment(definition, resume="latest", seeds=2, runs_dir=tmp_path, live=False)
    assert calls[5:] == ["sgd-seed1", "big-seed1"] and len(resumed) == 1
    assert read_mechanisms(third.folder / "runs" / third.record.variants[0].runs[1]) is None
    assert third.record.variants[0].learning_rate == sgd.learning_rate


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
    # not a smoke run: the experiment's report wrote its run's report, and links to it
    assert f"runs/{ok.runs[0]}/report.html" in (outcome.folder / "report.html").read_text()
    assert (outcome.folder / "runs" / ok.runs[0] / "report.html").is_file()


# ---------------------------------------------------------------------------------- the CLI
def _cli(*args, env=None):
    from digitlab.cli import app

    return CliRunner().invoke(app, list(args), env=env)


def test_cli_lists_experiments():
    result = _cli("experiment", "list", "--json")
    assert result.exit_code == 0
    listed = json.loads(result.output)
    assert [e["name"] for e in listed] == ["dropout", "batch-size", "normalization", "dropout-size"]
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
    assert boom["test_accuracy"] == {"mean": None, "std": None, "values": [], "missing": 0}
    assert record["conclusion"][0].startswith("boom diverged (the loss became NaN) with seeds 0, 1")
    assert "Welch" in record["statistics"]


def test_cli_quick_says_first_that_it_is_a_smoke_run(tmp_path, mnist):
    spec = tmp_path / "one.toml"
    spec.write_text(
        'question = "?"\n[budget]\nepochs = 1\ntrain_samples = 500\n[[variants]]\nname = "a"\n'
    )
    result = _cli(
        "experiment", str(spec), "--quick", "--runs-dir", str(tmp_path / "runs"), "--json"
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith(
        "A smoke run (--quick): too small to conclude anything"
    )
    record = json.loads(result.output[result.output.index("{") :])
    assert record["smoke"] is True and record["budget"]["train_samples"] == 600


def test_definition_round_trips_through_the_record():
    definition = BUILT_IN["normalization"]
    again = validate(Definition, definition.model_dump(mode="json"), "record")
    assert again == definition


def test_a_run_too_weak_to_calibrate_is_still_saved(tmp_path, monkeypatch, mnist):
    """Calibration needs 100 correctly classified held-out digits; a run short of them used to
    lose its finished training to a RunError there. It is saved uncalibrated instead, like
    a run from before calibration. A tiny run (an experiment's --quick, or `train
    --train-samples 300`) no longer is one: it calibrates on the test's first half."""
    import digitlab.confidence
    from digitlab.errors import RunError
    from digitlab.presets import get_preset
    from digitlab.training import train

    spec = get_preset("seed").replace(
        train={"train_samples": 300, "validation_split": 0.2, "epochs": 1}
    )
    tiny = train(spec, runs_dir=tmp_path / "tiny", verbose=0, pictures=False)
    assert tiny.config.thresholds["calibration_digits"] == 5000

    def too_few(*args, **kwargs):  # what calibrate says with fewer than 100 right
        raise RunError("only 12 correctly classified calibration digits; calibrating needs 100")

    monkeypatch.setattr(digitlab.confidence, "calibrate", too_few)
    run = train(spec, runs_dir=tmp_path / "weak", verbose=0, pictures=False)
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
    budget = BUILT_IN["dropout"].budget
    shown = f"{budget.epochs} epochs, 5,000 digits (+1,000 validation), {budget.seeds} seeds"
    assert shown in text and "experiment folder" not in text
    # the epochs min_updates raises and the digits train_digits lowers, as the runs get them
    assert "20–300 epochs, 5,000 digits" in text
    assert "5–188 epochs, 500–20,000 digits" in text
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
