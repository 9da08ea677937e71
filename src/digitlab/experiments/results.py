"""An experiment's figures and sentences, computed from its finished runs."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from digitlab.experiments import conclusions
from digitlab.experiments.plan import ACTIVATION_BATCH, updates_per_run
from digitlab.experiments.schema import Budget, Definition, ExperimentRecord
from digitlab.runs import Run
from digitlab.schema import Spec


@dataclass
class Done:
    """A finished run and what the experiment measured around it."""

    run: Run
    train_loss: float | None  # inference-mode loss on the training digits at the end
    activations: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def steady_seconds(epoch_seconds: list[float] | tuple[float, ...]) -> list[float]:
    """Each epoch's time with the compilation left out: the first epoch also compiles the
    epoch's program (a second or two), so every epoch counts as the median of the others."""
    seconds = list(epoch_seconds)
    if len(seconds) < 2:
        return seconds
    steady = float(np.median(seconds[1:]))
    return [steady] * len(seconds)


def variant_results(
    definition: Definition,
    budget: Budget,
    specs: dict[str, Spec],
    done: dict[tuple[str, int], Done],
    seeds: list[int],
    diverged: set[tuple[str, int]] = frozenset(),
) -> list[dict[str, Any]]:
    results = []
    for variant in definition.variants:
        runs = [done[(variant.name, s)] for s in seeds if (variant.name, s) in done]
        complete = [d for d in runs if d.run.status == "complete"]
        spec = specs[variant.name]

        def last(d: Done, key: str) -> float | None:
            values = d.run.history.get(key) or [None]
            return values[-1]

        train_loss = [
            d.train_loss if d.train_loss is not None else last(d, "loss") for d in complete
        ]
        val_loss = [last(d, "val_loss") for d in complete]
        gaps = [v - t for v, t in zip(val_loss, train_loss, strict=True) if None not in (v, t)]
        results.append(
            {
                "name": variant.name,
                "description": variant.description,
                "spec": variant.model_dump(exclude={"name", "description"}, exclude_defaults=True),
                "runs": [d.run.name for d in runs],
                "seeds": [d.run.spec.train.seed for d in runs],
                "batch_size": spec.train.batch_size,
                "learning_rate": spec.train.learning_rate,
                "test_accuracy": conclusions.summarize(
                    [d.run.metrics.test_accuracy for d in complete]
                ),
                "final_train_loss": conclusions.summarize(train_loss),
                "final_val_loss": conclusions.summarize(val_loss),
                "generalization_gap": conclusions.summarize(gaps),
                "seconds": conclusions.summarize([d.run.metrics.train_seconds for d in complete]),
                "updates": updates_per_run(spec, budget, budget.epochs),
                "diverged_seeds": sorted(s for name, s in diverged if name == variant.name),
                "activations": {d.run.name: d.activations for d in runs if d.activations},
            }
        )
    return results


def conclusion_lines(
    definition: Definition, variants: list[dict[str, Any]], curves: dict[str, list[dict]]
) -> list[str]:
    by_name = {
        v["name"]: {
            "test_accuracy": v["test_accuracy"]["values"],
            "generalization_gap": v["generalization_gap"]["values"],
        }
        for v in variants
        if v["test_accuracy"]["values"]
    }
    lines = [
        f"{v['name']} diverged (the loss became NaN) with seed"
        f"{'s' * (len(v['diverged_seeds']) > 1)} {', '.join(map(str, v['diverged_seeds']))}; "
        "its figures cover only the seeds that trained."
        for v in variants
        if v["diverged_seeds"]
    ]
    if not by_name:
        return [*lines, "No finished runs to compare yet."]
    lines += conclusions.conclude(by_name, definition.baseline_name, definition.pairs)
    if "updates" in definition.plots or "seconds" in definition.plots:
        lines += _speed_sentences(variants, curves)
    if definition.activation_stats:
        lines += _saturation_sentences(variants)
    return lines


def _speed_sentences(variants: list[dict[str, Any]], curves: dict[str, list[dict]]) -> list[str]:
    """Epochs, updates and seconds each variant took to reach a validation accuracy target:
    90% of the best final mean validation accuracy of any variant."""
    finals = {
        name: float(np.mean([c["val_accuracy"][-1] for c in runs]))
        for name, runs in curves.items()
        if runs and all(c.get("val_accuracy") for c in runs)
    }
    if not finals:
        return []
    target = round(0.9 * max(finals.values()), 3)
    parts = []
    for variant in variants:
        runs = curves.get(variant["name"]) or []
        if not runs:
            continue
        curve = np.mean([c["val_accuracy"] for c in runs], axis=0)
        seconds = np.mean([np.cumsum(c["epoch_seconds"]) for c in runs], axis=0)  # steady
        index = conclusions.first_reaching(list(curve), target)
        per_epoch = variant["updates"] // max(len(curve), 1)
        if index is None:
            parts.append(f"{variant['name']} not within {len(curve)} epochs")
        else:
            parts.append(
                f"{variant['name']} after {index + 1} epoch{'s' * (index > 0)}, "
                f"{per_epoch * (index + 1):,} updates, {seconds[index]:.1f} s"
            )
    return [
        f"Reaching {target:.1%} validation accuracy (mean over seeds): " + "; ".join(parts) + "."
    ]


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


def curves_of(
    definition: Definition, done: dict[tuple[str, int], Done], budget: Budget
) -> dict[str, list[dict]]:
    """Per variant (in the definition's order), per finished run: its per-epoch history,
    seconds and updates per epoch."""
    curves: dict[str, list[dict]] = {v.name: [] for v in definition.variants}
    for (variant, _seed), d in sorted(done.items(), key=lambda item: item[0][1]):
        if d.run.status != "complete":
            continue
        history = {k: list(v) for k, v in d.run.history.items()}
        curves.setdefault(variant, []).append(
            {
                **history,
                "epoch_seconds": steady_seconds(d.run.metrics.epoch_seconds),
                "updates_per_epoch": math.ceil(budget.fit_samples / d.run.spec.train.batch_size),
            }
        )
    return curves


def build_record(
    definition: Definition,
    budget: Budget,
    policy: str,
    quick: bool,
    specs: dict[str, Spec],
    variants: list[dict[str, Any]],
    curves: dict[str, list[dict]],
    **fields: Any,
) -> ExperimentRecord:
    """The experiment's record from its figures; `fields` are the rest: status, created,
    seeds, plots, wall_seconds, cpu_seconds."""
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
            "conclusion": conclusion_lines(definition, variants, curves),
            "statistics": conclusions.STATISTICS,
            "plots": fields["plots"],
            "definition": definition.model_dump(mode="json"),
            "wall_seconds": round(fields["wall_seconds"], 2),
            "cpu_seconds": round(fields["cpu_seconds"], 2),
        }
    )
