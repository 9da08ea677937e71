"""An experiment's figures and sentences, computed from its finished runs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.errors import RunError
from digitlab.experiments import conclusions
from digitlab.experiments.plan import (
    ACTIVATION_BATCH,
    RECORDED_SEED,
    TUNING_SEED,
    choose_rate,
    fit_digits,
    steps_per_epoch,
    updates_per_run,
)
from digitlab.experiments.record import RUNS_FOLDER
from digitlab.experiments.schema import Budget, Definition, ExperimentRecord
from digitlab.runs import Run
from digitlab.runs.folder import read_mechanisms
from digitlab.schema import Spec

# An automatic target is never within half the way from chance to the best final validation
# accuracy; and none is set when the best is within this of chance (nothing learned to time).
NEAR_CHANCE = 0.1
TO_TARGET = ("epochs_to_target", "updates_to_target", "examples_to_target", "seconds_to_target")


@dataclass
class Done:
    """A finished run and what the experiment measured around it."""

    run: Run
    # the inference-mode training loss at the end, from a record written before the loss was
    # kept per epoch in the run's history (None: read it from the history)
    train_loss: float | None = None
    activations: dict[str, dict[str, list[float]]] = field(default_factory=dict)


@dataclass
class Tuning:
    """A variant's learning-rate grid as far as it is trained: its tuning runs by rate (each
    complete or interrupted), the rates that diverged, and those whose tuning run failed on
    every try (on many workers: a worker killed each time)."""

    runs: dict[float, Run] = field(default_factory=dict)
    diverged: set[float] = field(default_factory=set)
    failed: set[float] = field(default_factory=set)

    def points(self, rates: Sequence[float]) -> list[dict[str, Any]]:
        """The grid's points (`GridPoint`s) for the rates tuned so far, in grid order."""
        points = []
        for rate in rates:
            run = next((r for k, r in self.runs.items() if math.isclose(k, rate)), None)
            if any(math.isclose(k, rate) for k in self.diverged):
                points.append({"learning_rate": rate, "diverged": True, "run": None})
            elif any(math.isclose(k, rate) for k in self.failed):
                points.append({"learning_rate": rate, "failed": True, "run": None})
            elif run is not None and run.status == "complete":
                points.append(
                    {
                        "learning_rate": rate,
                        "val_accuracy": _last(run.history, "val_accuracy"),
                        "val_loss": _last(run.history, "val_loss"),
                        "run": run.name,
                    }
                )
        return points

    def chosen(self, rates: Sequence[float]) -> float | None:
        """The rate tuning chose, once every rate of the grid is done (None before, and when
        every rate diverged)."""
        points = self.points(rates)
        return choose_rate(points) if len(points) == len(rates) else None

    def finished(self, rates: Sequence[float]) -> bool:
        return len(self.points(rates)) == len(rates)


def _last(history: Mapping[str, Sequence[float]], key: str) -> float | None:
    values = history.get(key) or [None]
    value = values[-1]
    return None if value is None or not math.isfinite(value) else float(value)


def steady_seconds(epoch_seconds: list[float] | tuple[float, ...]) -> list[float]:
    """Each epoch's time with the compilation left out: the first epoch also compiles the
    epoch's program (a second or two), so every epoch counts as the median of the others."""
    seconds = list(epoch_seconds)
    if len(seconds) < 2:
        return seconds
    steady = float(np.median(seconds[1:]))
    return [steady] * len(seconds)


def summary(values: Sequence[float | None]) -> dict[str, Any]:
    """A `Summary`: mean, std (ddof=1) and the finite values; `missing` counts the rest (a
    target never reached, a loss that is not finite)."""
    kept = [float(v) for v in values if v is not None and math.isfinite(v)]
    return {**conclusions.summarize(kept), "missing": len(values) - len(kept)}


# ---------------------------------------------------------------------------------- curves
def curve_of(run: Run) -> dict[str, Any]:
    """One run's per-epoch history, with its steady seconds, updates and examples per epoch."""
    return {
        **{key: list(values) for key, values in run.history.items()},
        "epoch_seconds": steady_seconds(run.metrics.epoch_seconds),
        "updates_per_epoch": steps_per_epoch(run.spec.train.batch_size, fit_digits(run.spec)),
        "examples_per_epoch": fit_digits(run.spec),  # each epoch sees every digit fit trains on
    }


def curves_of(definition: Definition, done: dict[tuple[str, int], Done]) -> dict[str, list[dict]]:
    """Per variant (in the definition's order), per finished run of the compared seeds: its
    per-epoch history (loss, accuracy, val_loss, val_accuracy, inference_loss and
    inference_accuracy: training digits, dropout off), epoch_seconds (steady),
    updates_per_epoch and examples_per_epoch."""
    curves: dict[str, list[dict]] = {v.name: [] for v in definition.variants}
    for (variant, _seed), d in sorted(done.items(), key=lambda item: item[0][1]):
        if d.run.status == "complete":
            curves.setdefault(variant, []).append(curve_of(d.run))
    return curves


def target_accuracy(
    definition: Definition, curves: Mapping[str, list[dict]], classes: int
) -> float | None:
    """The validation accuracy the *_to_target figures count to: the definition's `target`;
    else 90% of the best final mean validation accuracy of any variant, but never within
    half the way from chance (1 / classes) to that best. None when the best is within
    NEAR_CHANCE of chance (or nothing finished): nothing was learned worth timing."""
    if definition.target is not None:
        return definition.target
    finals = [
        float(np.mean([c["val_accuracy"][-1] for c in runs]))
        for runs in curves.values()
        if runs and all(c.get("val_accuracy") for c in runs)
    ]
    chance = 1 / classes
    if not finals or max(finals) - chance < NEAR_CHANCE:
        return None
    best = max(finals)
    return round(max(0.9 * best, chance + (best - chance) / 2), 3)


def to_target(curve: Mapping[str, Any], target: float | None) -> dict[str, float | None]:
    """Epochs, updates, examples and (steady) seconds to the end of the first epoch whose
    validation accuracy is ≥ `target`; all None when no epoch reaches it (or no target)."""
    index = None
    if target is not None:
        index = conclusions.first_reaching(curve.get("val_accuracy") or [], target)
    if index is None:
        return dict.fromkeys(TO_TARGET)
    epochs = index + 1
    return {
        "epochs_to_target": float(epochs),
        "updates_to_target": float(epochs * curve["updates_per_epoch"]),
        "examples_to_target": float(epochs * curve["examples_per_epoch"]),
        "seconds_to_target": float(np.sum(curve["epoch_seconds"][:epochs])),
    }


def gap_at_matched_loss(curve: Mapping[str, Any], matched_loss: float | None) -> float | None:
    """Validation − training loss (dropout off) at the first epoch whose training loss is ≤
    `matched_loss` (Keskar et al. 2017 compare batch sizes at equal training loss); None if
    the run never gets there."""
    losses = curve.get("inference_loss") or []
    if matched_loss is None:
        return None
    for index, loss in enumerate(losses):
        if loss is not None and math.isfinite(loss) and loss <= matched_loss:
            return float(curve["val_loss"][index] - loss)
    return None


# -------------------------------------------------------------------------------- variants
def variant_results(
    definition: Definition,
    specs: dict[str, Spec],
    done: dict[tuple[str, int], Done],
    seeds: list[int],
    diverged: set[tuple[str, int]] = frozenset(),
    *,
    tuning: Mapping[str, Tuning] | None = None,
    target: float | None = None,
) -> list[dict[str, Any]]:
    """Each variant's `VariantResult` (as a dict) over its finished runs of `seeds`."""
    results = []
    tuning = tuning or {}
    for variant in definition.variants:
        runs = [done[(variant.name, s)] for s in seeds if (variant.name, s) in done]
        complete = [d for d in runs if d.run.status == "complete"]
        spec, grid, rates = specs[variant.name], tuning.get(variant.name), variant.learning_rates
        results.append(
            {
                "name": variant.name,
                "description": variant.description,
                "spec": variant.model_dump(exclude={"name", "description"}, exclude_defaults=True),
                "runs": [d.run.name for d in runs],
                "seeds": [d.run.spec.train.seed for d in runs],
                "batch_size": spec.train.batch_size,
                "learning_rate": spec.train.learning_rate if grid is None else grid.chosen(rates),
                "epochs": spec.train.epochs,
                "fit_digits": fit_digits(spec),
                "learning_rate_grid": grid.points(rates) if grid is not None else [],
                **_measured(complete, target, definition.matched_loss),
                "updates": updates_per_run(spec),
                "diverged_seeds": sorted(s for name, s in diverged if name == variant.name),
                "activations": {d.run.name: d.activations for d in runs if d.activations},
            }
        )
    return results


def _measured(
    complete: list[Done], target: float | None, matched_loss: float | None
) -> dict[str, Any]:
    """The figures a variant's finished runs give, each a `Summary` across them."""
    curves = [curve_of(d.run) for d in complete]
    train_loss = [_train_loss(d) for d in complete]
    val_loss = [_last(d.run.history, "val_loss") for d in complete]
    gaps = [None if None in (v, t) else v - t for v, t in zip(val_loss, train_loss, strict=True)]
    reached = [to_target(c, target) for c in curves]
    at_matched = [gap_at_matched_loss(c, matched_loss) for c in curves]
    sharpness = [_first_finite(c.get("sharpness")) for c in curves]
    return {
        "test_accuracy": summary([d.run.metrics.test_accuracy for d in complete]),
        "train_accuracy": summary([_last(d.run.history, "inference_accuracy") for d in complete]),
        "final_train_loss": summary(train_loss),
        "final_val_loss": summary(val_loss),
        "generalization_gap": summary(gaps),
        **{key: summary([r[key] for r in reached]) for key in TO_TARGET},
        "gap_at_matched_loss": summary(at_matched) if matched_loss is not None else None,
        "sharpness_at_matched_loss": summary(sharpness) if matched_loss is not None else None,
        "seconds": summary([d.run.metrics.train_seconds for d in complete]),
    }


def _first_finite(values) -> float | None:
    """The first finite value: `SharpnessAtLoss` logs NaN but where it measured."""
    return next((float(v) for v in values or () if v is not None and math.isfinite(v)), None)


def _train_loss(d: Done) -> float | None:
    """The training loss at the end with dropout off: the last epoch's `inference_loss`;
    older runs: as their record kept it, else Keras's training-mode loss."""
    if d.run.history.get("inference_loss"):
        return _last(d.run.history, "inference_loss")
    return d.train_loss if d.train_loss is not None else _last(d.run.history, "loss")


# ------------------------------------------------------------------------------- sentences
def conclusion_lines(
    definition: Definition,
    variants: list[dict[str, Any]],
    judged: list[str],
    target: float | None,
    classes: int,
    smoke: bool = False,
) -> list[str]:
    """The conclusion: runs that diverged, the tuned rates, the tests' sentences (`judged`,
    from `statistics.judge`), the times to the target and the saturation of the first layer."""
    lines = [
        f"{v['name']} diverged (the loss became NaN) with seed"
        f"{'s' * (len(v['diverged_seeds']) > 1)} {', '.join(map(str, v['diverged_seeds']))}; "
        "its figures cover only the seeds that trained."
        for v in variants
        if v["diverged_seeds"]
    ]
    lines += _grid_sentences(variants)
    if not any(v["test_accuracy"]["values"] for v in variants):
        return [*lines, "No finished runs to compare yet."]
    lines += judged
    if _times_to_target(definition) and not smoke:  # a smoke run reaches nothing
        lines += _target_sentences(variants, target, classes)
    if definition.activation_stats:
        lines += _saturation_sentences(variants)
    return lines


def _times_to_target(definition: Definition) -> bool:
    """Whether the experiment is about time: it draws the clocks or claims a time to target."""
    clocks = {"updates", "seconds", "to-target"} & set(definition.plots)
    timed = any(c.metric in TO_TARGET for c in definition.claims)
    return bool(clocks) or timed or definition.target is not None


def _grid_sentences(variants: list[dict[str, Any]]) -> list[str]:
    """Which rate each tuned variant got, out of which grid."""
    parts = []
    for v in variants:
        points = v["learning_rate_grid"]
        if not points:
            continue
        grid = ", ".join(f"{p['learning_rate']:g}" for p in points)
        failed = [f"{p['learning_rate']:g}" for p in points if p.get("diverged")]
        note = f"; {', '.join(failed)} diverged" if failed else ""
        if v["learning_rate"] is None:
            chosen = "none yet" if len(failed) < len(points) else "every rate diverged"
        else:
            chosen = f"{v['learning_rate']:g}"
            ends = (points[0]["learning_rate"], points[-1]["learning_rate"])
            if len(points) > 1 and any(math.isclose(v["learning_rate"], e) for e in ends):
                chosen += ", at the grid's edge: a rate beyond it may do better"
        parts.append(f"{v['name']} {chosen} (of {grid}{note})")
    if not parts:
        return []
    return [
        "Learning rates chosen on the validation digits, one run per rate at seed "
        f"{TUNING_SEED} (not a compared seed): " + "; ".join(parts) + "."
    ]


def _target_sentences(
    variants: list[dict[str, Any]], target: float | None, classes: int
) -> list[str]:
    """Updates, digits, epochs and seconds each variant took to reach the target (means over
    the seeds that reached it)."""
    if target is None:
        return [
            "No time-to-target figures: no variant's final validation accuracy is clear of "
            f"chance ({1 / classes:.0%}) by {NEAR_CHANCE:.0%} or more."
        ]
    parts = []
    for v in variants:
        epochs = v["epochs_to_target"]
        runs = len(epochs["values"]) + epochs["missing"]
        if not runs:
            continue
        if not epochs["values"]:
            parts.append(f"{v['name']} not within {_count(v['epochs'], 'epoch')}")
            continue
        text = (
            f"{v['name']} after {v['updates_to_target']['mean']:,.0f} updates, "
            f"{v['examples_to_target']['mean']:,.0f} digits, "
            f"{_count(epochs['mean'], 'epoch', '.3g')}, {v['seconds_to_target']['mean']:.1f} s"
        )
        if epochs["missing"]:
            text += f" ({epochs['missing']} of {runs} runs never reached it)"
        parts.append(text)
    return [
        f"Reaching {target:.1%} validation accuracy (means over the runs that did): "
        + "; ".join(parts)
        + "."
    ]


def _count(n: float, noun: str, spec: str = ",") -> str:
    """ "1 epoch", "2.5 epochs": a count with its noun, singular for one."""
    return f"{n:{spec}} {noun}{'' if n == 1 else 's'}"


def _saturation_sentences(variants: list[dict[str, Any]]) -> list[str]:
    """The first hidden layer's saturated (or dead) fraction at the end, per variant."""
    parts = []
    for variant in variants:
        first: list[float] = []
        label = ""
        for layers in variant["activations"].values():
            if not layers:
                continue
            name, stats = next(iter(layers.items()))
            key = "saturated" if "saturated" in stats else "dead" if "dead" in stats else None
            if key:
                first.append(stats[key][-1])
                label = f"{'saturated' if key == 'saturated' else 'dead'} ({name.split()[-1]})"
        if first:
            parts.append(f"{variant['name']} {np.mean(first):.0%} {label}")
    if not parts:
        return []
    return [
        f"First hidden layer at the end, on {ACTIVATION_BATCH} validation digits: "
        + "; ".join(parts)
        + "."
    ]


# ------------------------------------------------------------------------ from the old record
def recorded_train_loss(previous: ExperimentRecord | None, run_name: str) -> float | None:
    """A finished run's inference-mode training loss, from the record being resumed."""
    if previous is None:
        return None
    for variant in previous.variants:
        for name, loss in zip(variant.runs, variant.final_train_loss.values, strict=False):
            if name == run_name:
                return loss
    return None


def recorded_activations(previous: ExperimentRecord | None) -> dict[str, dict]:
    """Each run's activation statistics, by run name, from the record being resumed."""
    if previous is None:
        return {}
    return {
        run: {layer: {k: list(x) for k, x in stats.items()} for layer, stats in layers.items()}
        for variant in previous.variants
        for run, layers in variant.activations.items()
    }


def recorded_diverged_rates(previous: ExperimentRecord | None) -> set[tuple[str, float]]:
    """The (variant, rate) tuning runs that diverged, from the record being resumed: they
    left no run to find, and are not tried again."""
    if previous is None:
        return set()
    return {
        (variant.name, point.learning_rate)
        for variant in previous.variants
        for point in variant.learning_rate_grid
        if point.diverged
    }


# ---------------------------------------------------------------------------------- record
def build_record(
    definition: Definition,
    budget: Budget,
    policy: str,
    quick: bool,
    specs: dict[str, Spec],
    variants: list[dict[str, Any]],
    target: float | None,
    classes: int,
    judged: bool = True,
    **fields: Any,
) -> ExperimentRecord:
    """The experiment's record from its figures, its claims and comparisons judged
    (`statistics.judge`) when `judged` (the record written after each run leaves the tests
    to the final one: they cost most of a second each time); `fields` are the rest:
    status, created, seeds, plots, wall_seconds, cpu_seconds."""
    from digitlab.experiments.statistics import Judgement, judge

    if judged:
        judgement = judge(definition, variants, smoke=quick)
    else:
        judgement = Judgement([], [], [], ["Not tested yet: the runs are still training."], "")
    return ExperimentRecord.model_validate(
        {
            "name": definition.name,
            "question": definition.question,
            "description": definition.description,
            "anchor": definition.anchor,
            "status": fields["status"],
            "created": fields["created"],
            "updated": datetime.now(),
            "seeds": fields["seeds"],
            "budget": {
                **budget.model_dump(),
                "fit_samples": budget.fit_samples,
                "quick": quick,
                "batch_sizes": sorted({s.train.batch_size for s in specs.values()}),
            },
            "learning_rate_policy": policy,
            "baseline": definition.baseline_name,
            "variants": variants,
            "conclusion": conclusion_lines(
                definition, variants, judgement.lines, target, classes, smoke=quick
            ),
            "statistics": judgement.statistics,
            "answer": judgement.answer,
            "claims": judgement.claims,
            "tests": judgement.tests,
            "target": target,
            "smoke": quick,
            "plots": fields["plots"],
            "definition": definition.model_dump(mode="json"),
            "wall_seconds": round(fields["wall_seconds"], 2),
            "cpu_seconds": round(fields["cpu_seconds"], 2),
        }
    )


def recordings(folder: Path, variants: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each variant's recording (mechanisms.json) from its `RECORDED_SEED` run in the
    experiment's runs/, for the variants whose run recorded one (older runs did not)."""
    found = {}
    for variant in variants:
        for name, seed in zip(variant.get("runs", []), variant.get("seeds", []), strict=False):
            if seed != RECORDED_SEED:
                continue
            try:
                recording = read_mechanisms(Path(folder) / RUNS_FOLDER / name)
            except RunError:
                recording = None  # a damaged file costs its lines, not the report
            epochs = recording.get("epochs") if recording else None
            if isinstance(epochs, list) and epochs and all(isinstance(e, int) for e in epochs):
                found[variant["name"]] = recording
    return found
