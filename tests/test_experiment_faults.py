"""Experiments at their edges (issue 19): trained work is saved, bad input is refused in one
line before anything trains, and an experiment folder is validated and locked when resumed."""

from __future__ import annotations

import fcntl
import json
import shutil

import pytest

from digitlab.errors import DigitlabError, RunError, SpecError
from digitlab.experiments.definitions import load_definition
from digitlab.experiments.schema import Definition
from digitlab.schema import validate

TINY = {"epochs": 1, "train_samples": 300, "seeds": 1}


def _definition(*variants: dict, budget: dict | None = None, **extra) -> Definition:
    data = {"name": "edge", "question": "?", "budget": budget or TINY, "variants": list(variants)}
    return validate(Definition, {**data, **extra}, "test")


def _run(definition: Definition, runs_dir, **kwargs):
    from digitlab.experiments.runner import run_experiment

    return run_experiment(definition, runs_dir=runs_dir, live=False, **kwargs)


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if any cell starts to train."""
    from digitlab import training

    def refuse(*args, **kwargs):
        raise AssertionError("a cell trained before the experiment was checked")

    monkeypatch.setattr(training, "train", refuse)
    monkeypatch.setattr(training, "resume", refuse)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, mnist):
    """One finished tiny experiment (one variant 'a', one seed), copied by each test."""
    runs_dir = tmp_path_factory.mktemp("finished")
    outcome = _run(_definition({"name": "a"}), runs_dir)
    assert outcome.record.status == "complete"
    return outcome.folder


@pytest.fixture
def experiment(finished, tmp_path):
    folder = tmp_path / "experiments" / finished.name
    shutil.copytree(finished, folder)
    return folder


def _edit_record(folder, change) -> None:
    path = folder / "experiment.json"
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


# ------------------------------------------------------------ trained work is saved (3, 4)
def test_image_input_presets_train_and_are_measured_in_an_experiment(tmp_path, mnist):
    budget = {**TINY, "train_samples": 400}  # 320 to fit: a batch of 256 (fast's) fits
    outcome = _run(_definition({"name": "fast", "preset": "fast"}, budget=budget), tmp_path)
    (fast,) = outcome.record.variants
    assert outcome.record.status == "complete" and len(fast.runs) == 1
    assert fast.final_train_loss.values[0] > 0  # measured on 28×28 images, as it trained


def test_an_ema_variant_is_saved(tmp_path, mnist):
    outcome = _run(_definition({"name": "ema", "train": {"ema_momentum": 0.99}}), tmp_path)
    (ema,) = outcome.record.variants
    assert outcome.record.status == "complete" and len(ema.runs) == 1
    assert ema.final_train_loss.values[0] > 0
    from digitlab.runs import load_run

    run = load_run(outcome.folder / "runs" / ema.runs[0])
    assert run.model.count_params() > 0  # the saved model loads back


# ------------------------------------------------------ refused before anything trains (5, 13)
@pytest.mark.parametrize(
    ("budget", "variant", "message"),
    [
        ({**TINY, "validation_split": 0.9999}, {"name": "a"}, "leaves 0 digits to train on"),
        (TINY, {"name": "a", "train": {"batch_size": 512}}, "batch size 512"),
    ],
)
def test_a_budget_too_small_for_a_variant_is_refused_before_training(
    tmp_path, no_training, budget, variant, message
):
    with pytest.raises(SpecError) as caught:  # on reading the definition, or before a cell
        _run(_definition({"name": "ok"}, variant, budget=budget), tmp_path)
    assert message in _one_line(caught.value)
    assert list(tmp_path.rglob("*")) == []  # no experiment folder, not even experiments/


@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ({"name": "bad", "layers": [{"type": "Densee", "units": 10}]}, "Densee"),
        (
            {
                "name": "bad",
                "layers": [
                    {"type": "Conv2D", "filters": 4, "kernel_size": 3},
                    {"type": "Flatten"},
                    {"type": "Dense", "units": 10},
                ],
            },
            "conv2d",
        ),
        ({"name": "bad", "train": {"batch_size": 0}}, "batch_size"),
    ],
)
def test_a_bad_variant_is_refused_before_the_first_cell_and_leaves_nothing(
    tmp_path, no_training, variant, message
):
    with pytest.raises(SpecError) as caught:
        _run(_definition({"name": "ok"}, variant), tmp_path)
    text = _one_line(caught.value)
    assert message in text and "bad" in text
    assert list(tmp_path.rglob("*")) == []


# ------------------------------------------------------------------------- one dataset (12)
def test_variants_on_different_datasets_are_refused(tmp_path):
    path = tmp_path / "mixed.toml"
    path.write_text(
        'question = "?"\n[budget]\nepochs = 1\ntrain_samples = 300\n'
        '[[variants]]\nname = "digits"\n'
        '[[variants]]\nname = "clothes"\ntrain = { dataset = "fashion-mnist" }\n'
    )
    with pytest.raises(SpecError) as caught:
        load_definition(path)
    text = _one_line(caught.value)
    assert "one dataset" in text and "clothes" in text and "fashion-mnist" in text
    every = _definition(
        {"name": "a", "train": {"dataset": "fashion-mnist"}},
        {"name": "b", "train": {"dataset": "fashion-mnist", "learning_rate": 0.01}},
    )  # all on one dataset: fine, and measured on it
    assert {v.train["dataset"] for v in every.variants} == {"fashion-mnist"}


# --------------------------------------------------------------- the folder on --resume (14, 17)
def test_a_record_edited_to_a_bad_policy_is_refused_on_resume(experiment, no_training):
    _edit_record(experiment, lambda r: r.update(learning_rate_policy="cubic"))
    with pytest.raises(RunError) as caught:
        _run(_definition({"name": "a"}), None, resume=experiment)
    assert "learning_rate_policy" in _one_line(caught.value)


def test_an_unknown_policy_is_refused_before_anything_trains(tmp_path, no_training):
    with pytest.raises(SpecError, match="learning_rate_policy must be one of tuned, same, linear"):
        _run(_definition({"name": "a"}), tmp_path, learning_rate_policy="cubic")
    assert list(tmp_path.rglob("*")) == []


def test_a_run_of_a_variant_renamed_in_the_record_is_refused_on_resume(experiment, no_training):
    _edit_record(experiment, lambda r: r["definition"]["variants"][0].update(name="renamed"))
    with pytest.raises(RunError) as caught:
        _run(_definition({"name": "a"}), None, resume=experiment)
    text = _one_line(caught.value)
    assert "'a'" in text and "renamed" in text and "runs/" in text


def test_resume_of_a_folder_without_its_record_says_so(experiment, no_training):
    (experiment / "experiment.json").unlink()
    with pytest.raises(RunError) as caught:
        _run(_definition({"name": "a"}), None, resume=experiment)
    text = _one_line(caught.value)
    assert "experiment.json" in text and "not found" not in text


def test_a_comparison_that_is_not_a_pair_says_what_is_wrong():
    with pytest.raises(SpecError) as caught:
        _definition({"name": "a"}, {"name": "b"}, comparisons=[["a"]])
    text = _one_line(caught.value)
    assert "is missing" not in text and "two variant names" in text and "['a']" in text


# -------------------------------------------------------------------- one writer at a time (2)
def test_an_experiment_being_run_is_refused_to_a_second_process(experiment, no_training):
    with (experiment / ".lock").open("w") as held:  # as the first process holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("12345\n")
        held.flush()
        with pytest.raises(DigitlabError) as caught:
            _run(_definition({"name": "a"}), None, resume=experiment, seeds=2)
    text = _one_line(caught.value)
    assert "being run by another process" in text and "12345" in text
    record = json.loads((experiment / "experiment.json").read_text())
    assert record["seeds"] == [0]  # untouched
