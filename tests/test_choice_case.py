"""Choices in any case (issue 23, item 6): `--optimizer SGD`, `--dataset MNIST`, `ReLU` in a
spec file are their canonical lower-case names, and that name is what a run stores."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from digitlab.choices import canonical
from digitlab.cli import app
from digitlab.config import resolve_spec
from digitlab.errors import SpecError
from digitlab.presets import get_preset
from digitlab.schema import Spec, TrainConfig, validate

runner = CliRunner()


def test_a_choice_in_any_case_is_its_canonical_name():
    train = TrainConfig(
        optimizer="SGD",
        loss="Mean_Squared_Error",
        learning_rate_schedule="Cosine",
        dataset="MNIST",
        metrics=("Accuracy", "RECALL"),
    )
    assert (train.optimizer, train.loss, train.learning_rate_schedule, train.dataset) == (
        "sgd",
        "mean_squared_error",
        "cosine",
        "mnist",
    )
    assert train.metrics == ("accuracy", "recall")
    assert TrainConfig(loss="MSE").loss == "mean_squared_error"  # an alias, in capitals
    assert TrainConfig(optimizer="RMSProp").optimizer == "rmsprop"


def test_canonical_leaves_what_matches_nothing_or_several():
    assert canonical("Fashion-MNIST", ("mnist", "fashion-mnist")) == "fashion-mnist"
    assert canonical("SGDD", ("sgd",)) == "SGDD"
    assert canonical("A", ("a", "A")) == "A"  # exact wins
    assert canonical("a", ("A1", "b")) == "a"
    assert canonical("X", ("x", "X ")) == "x"
    assert canonical("Ab", ("ab", "AB")) == "Ab"  # two matches: no guess
    assert canonical(3, ("3",)) == 3


def test_a_misspelt_choice_is_still_refused_with_what_was_typed():
    with pytest.raises(SpecError, match=r"unknown optimizer 'SGDD' \(did you mean 'sgd'\?\)"):
        validate(TrainConfig, {"optimizer": "SGDD"}, "options")


def test_spec_files_read_choices_and_activations_in_any_case(tmp_path):
    path = tmp_path / "net.toml"
    path.write_text(
        'name = "caps"\ninput = "Flat"\n'
        '[[layers]]\ntype = "dense"\nunits = 16\nactivation = "ReLU"\n'
        '[[layers]]\ntype = "DROPOUT"\nrate = 0.2\n'
        '[[layers]]\ntype = "Dense"\nunits = 10\nactivation = "Softmax"\n'
        '[train]\noptimizer = "Adam"\nlearning_rate_schedule = "COSINE"\n'
    )
    spec = resolve_spec(None, path)
    assert spec.input == "flat"
    assert [layer["type"] for layer in spec.layers] == ["Dense", "Dropout", "Dense"]
    assert [layer.get("activation") for layer in spec.layers] == ["relu", None, "softmax"]
    assert (spec.train.optimizer, spec.train.learning_rate_schedule) == ("adam", "cosine")
    stored = json.dumps(spec.to_dict())
    assert "ReLU" not in stored and "Adam" not in stored and "COSINE" not in stored


def test_keras_names_every_activation_in_lower_case():
    """What lets the schema lower-case a spec's activation without importing Keras."""
    from digitlab.model import ACTIVATIONS

    assert ACTIVATIONS and all(name == name.lower() for name in ACTIVATIONS)


def test_search_spaces_and_presets_take_any_case():
    from digitlab.search_space import space_from_dict

    space = space_from_dict(
        {"activation": ["ReLU", "GELU"], "optimizer": "SGD", "learning_rate_schedule": "Cosine"}
    )
    assert space.activation == ("relu", "gelu")
    assert (space.optimizer, space.learning_rate_schedule) == (("sgd",), ("cosine",))
    assert get_preset("CNN") == get_preset("cnn")
    assert Spec(name="x", layers=[{"type": "Dense", "units": 10}], input="IMAGE").input == "image"


def test_train_flags_in_any_case_reach_the_run_as_canonical_names(monkeypatch, tmp_path):
    from digitlab import training

    seen = {}

    def fake_train(spec, **kwargs):
        seen["spec"] = spec
        raise SpecError("stop here")  # the spec is all this test needs

    monkeypatch.setattr(training, "train", fake_train)
    result = runner.invoke(
        app,
        ["train", "--optimizer", "SGD", "--loss", "Mean_Squared_Error", "--learning-rate-schedule",
         "Cosine", "--dataset", "MNIST", "--metrics", "Accuracy,Precision", "--preset", "Seed",
         "--runs-dir", str(tmp_path)],
    )  # fmt: skip
    assert "stop here" in result.output, result.output
    stored = seen["spec"].to_dict()  # what config.json holds
    assert stored["name"] == "seed"
    assert {key: stored["train"][key] for key in ("optimizer", "loss", "dataset")} == {
        "optimizer": "sgd",
        "loss": "mean_squared_error",
        "dataset": "mnist",
    }
    assert stored["train"]["learning_rate_schedule"] == "cosine"
    assert stored["train"]["metrics"] == ["accuracy", "precision"]


def test_cli_choice_options_take_any_case(monkeypatch, tmp_path):
    import digitlab.tune

    seen = {}

    class Result:
        interrupted = False

        def summary(self):
            return []

    monkeypatch.setattr(
        digitlab.tune, "tune", lambda study, **kwargs: seen.update(kwargs) or Result()
    )
    result = runner.invoke(
        app,
        ["tune", "--pruner", "Median", "--dataset", "Fashion-MNIST", "--runs-dir", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert (seen["pruner"], seen["dataset"]) == ("median", "fashion-mnist")


def test_the_tune_library_takes_a_pruner_in_any_case(tmp_path):
    from digitlab.tune.search import _job

    job = _job(
        "s", space=None, trials=1, timeout=None, workers=1, storage=None, runs_dir=tmp_path,
        data_dir=None, pruner="HyperBand", dataset="MNIST", train_samples=None,
        validation_split=0.1, seed=0,
    )  # fmt: skip
    assert job.pruner == "hyperband" and job.train.dataset == "mnist"


def test_a_built_in_experiment_in_any_case_is_that_experiment(tmp_path, monkeypatch):
    from digitlab.experiments.definitions import BUILT_IN, canonical_name, load_definition

    assert load_definition("Dropout") is BUILT_IN["dropout"]
    assert load_definition("BATCH-SIZE") is BUILT_IN["batch-size"]
    monkeypatch.chdir(tmp_path)
    mine = 'question = "mine?"\n[budget]\nepochs = 1\ntrain_samples = 300\nseeds = 1\n'
    (tmp_path / "Dropout").write_text(mine + '[[variants]]\nname = "a"\n')
    assert canonical_name("Dropout") == "Dropout"  # a file of that name is the user's
    assert load_definition("Dropout").question == "mine?"
