"""Issue 21 §1: sharpness at matched training loss (Keskar et al. 2017) — λ_max of the training
loss's Hessian, measured where an experiment run's training loss (dropout off) first falls to
the definition's `matched_loss`, kept in its history and summarised per variant."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")

from digitlab.experiments.callbacks import SharpnessAtLoss, TrainingLoss, measuring


def _fitted(mnist, callbacks, epochs: int):
    import keras

    from digitlab import fastfit
    from digitlab.model import build_model, compile_model, prepare_inputs
    from digitlab.presets import get_preset

    keras.utils.set_random_seed(0)
    spec = get_preset("seed").replace(train={"batch_size": 100})
    model = build_model(spec, num_classes=10)
    compile_model(model, spec, num_classes=10)
    x, y = prepare_inputs(mnist[0][0][:600]), mnist[0][1][:600]
    history = fastfit.fit(model, x, y, batch_size=100, epochs=epochs, callbacks=callbacks,
                          verbose=0, seed=0)  # fmt: skip
    return model, x, y, history


def test_sharpness_is_measured_once_where_the_loss_first_reaches_the_matched_loss(mnist):
    from digitlab.mechanisms import top_hessian_eigenvalue
    from digitlab.model import prepare_inputs

    x_first, y_first = prepare_inputs(mnist[0][0][:600]), mnist[0][1][:600]
    training = TrainingLoss(x_first, y_first)
    sharp = SharpnessAtLoss(training, matched_loss=10.0)  # any loss: the first epoch
    model, *_, history = _fitted(mnist, [training, sharp], epochs=1)
    (value,) = history["sharpness"]
    direct = top_hessian_eigenvalue(model, training.x, training.y).value  # same weights
    assert value == pytest.approx(direct, rel=1e-3) and value > 0

    # a loss never reached: NaN every epoch; a run that measured it before: never again
    for matched, measured in ((1e-9, False), (10.0, True)):
        training = TrainingLoss(x_first, y_first)
        sharp = SharpnessAtLoss(training, matched_loss=matched, measured=measured)
        *_, history = _fitted(mnist, [training, sharp], epochs=2)
        assert all(math.isnan(v) for v in history["sharpness"])


def test_measuring_adds_sharpness_only_with_a_matched_loss_and_knows_a_resumed_run():
    x, y = np.zeros((4, 784)), np.zeros(4)
    assert [type(c) for c in measuring(x, y)] == [TrainingLoss]
    training, sharp = measuring(x, y, 0.3)
    assert sharp.training is training and not sharp.measured
    _, again = measuring(x, y, 0.3, {"sharpness": [math.nan, 6.5, math.nan]})
    assert again.measured


def test_each_variant_summarises_the_first_finite_sharpness_of_its_runs():
    from digitlab.experiments import results

    assert results._first_finite([math.nan, 6.5, math.nan]) == 6.5
    assert results._first_finite([math.nan, math.nan]) is None
    assert results._first_finite(None) is None


def test_a_variant_summarises_each_runs_sharpness_where_it_was_measured():
    """Through the summary the record keeps: each run's one finite value, none for a run that
    never reached the matched loss, and no summary at all without a matched loss."""
    from types import SimpleNamespace

    from digitlab.experiments import results
    from digitlab.presets import get_preset

    spec = get_preset("seed").replace(train={"train_samples": 600, "validation_split": 0.2})

    def done(sharpness):
        history = {"loss": [0.5, 0.2, 0.1], "val_loss": [0.6, 0.3, 0.2],
                   "inference_loss": [0.5, 0.2, 0.1], "sharpness": sharpness}  # fmt: skip
        metrics = SimpleNamespace(test_accuracy=0.9, train_seconds=1.0, epoch_seconds=[1.0] * 3)
        return results.Done(SimpleNamespace(history=history, metrics=metrics, spec=spec))

    runs = [done([math.nan, 6.5, math.nan]), done([4.5, math.nan, math.nan]), done([math.nan] * 3)]
    summary = results._measured(runs, None, 0.3)["sharpness_at_matched_loss"]
    assert summary["values"] == [6.5, 4.5] and summary["missing"] == 1
    assert results._measured(runs, None, None)["sharpness_at_matched_loss"] is None


def test_a_sharpness_claim_needs_a_matched_loss():
    from digitlab.errors import SpecError
    from digitlab.experiments.definitions import BUILT_IN
    from digitlab.experiments.schema import Definition
    from digitlab.schema import validate

    data = BUILT_IN["batch-size"].model_dump(mode="json")
    assert any(c["metric"] == "sharpness_at_matched_loss" for c in data["claims"])
    data["matched_loss"] = None
    data["claims"] = [c for c in data["claims"] if c["name"] != "sharpness"]  # the gap's
    with pytest.raises(SpecError, match="sharp-minimum is about sharpness_at_matched_loss"):
        validate(Definition, data, "batch-size")


def test_the_sharpness_figure_draws_each_variants_values_beside_its_gap():
    from digitlab.experiments.figures_summary import sharpness_figure

    def summary(values):
        return {"mean": float(np.mean(values)), "std": 0.1, "values": values, "missing": 0}

    variants = [
        {"name": "batch-32", "sharpness_at_matched_loss": summary([6.0, 6.5, 7.0]),
         "gap_at_matched_loss": summary([0.07, 0.08, 0.09])},
        {"name": "batch-1024", "sharpness_at_matched_loss": summary([7.5, 8.0, 8.5]),
         "gap_at_matched_loss": summary([0.04, 0.05, 0.06])},
    ]  # fmt: skip
    sharp, gap = sharpness_figure(variants, 0.3).axes
    means = sorted(  # each errorbar's mean marker
        (round(float(x), 1), round(float(y), 2))
        for bar in sharp.containers
        for x, y in zip(*bar.lines[0].get_data(), strict=True)
    )
    assert means == [(0.0, 6.5), (1.0, 8.0)]
    assert "0.3" in sharp.get_title() and "Generalisation gap" in gap.get_title()
