"""An experiment's record in words: what its report page and `digitlab experiment` print.

Both say the same things in the same formats, so both build them here (numbers worded as
`experiments.conclusions` words the record's sentences): each variant's
changes as short diffs against its preset ("dropout 0.2 → 0.5"), a tested difference in its
metric's units with its interval ("+0.42 points [−0.10, +0.94]"), p values ("p < 0.001",
never "0.000"), the budget in the digits actually used, and the time it took.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from digitlab.experiments import conclusions
from digitlab.experiments.schema import ExperimentRecord, Test, VariantResult

INPUT_SCALING_NAMES = {
    "unit": "pixels /255",
    "raw": "raw pixels 0–255",
    "standardize": "standardised",
}
# Pictures an experiment draws (experiments/plots.py), by file stem: title and caption.
PLOT_TITLES = {
    "forest": ("Every tested difference", "Each difference with its adjusted interval, "
               "and the equivalence margin around zero."),
    "loss": ("Loss per epoch", "Training and validation loss of each variant."),
    "gap": ("Generalisation gap", "Validation − training loss at the last epoch, per variant."),
    "sharpness": (
        "Sharpness at equal training loss",
        "λ_max of the training loss's Hessian beside the gap, both where each run's training "
        "loss first fell to the matched loss (Keskar et al. 2017).",
    ),
    "accuracy": ("Accuracy", "Training, validation and test accuracy of each variant."),
    "updates": ("Loss per weight update", "The same losses against the updates made."),
    "seconds": ("Loss per second", "The same losses against training time."),
    "activations": ("Activations", "Each hidden layer's pre-activations and saturation."),
    "to-target": ("Time to target", "Steps and digits to the target accuracy, per batch size."),
    "learning-rates": ("Learning-rate grids", "Each tuned variant's validation accuracy "
                       "at each rate of its grid."),
    "mechanisms": ("Inside the networks while they trained", "Each variant's seed-0 run, "
                   "recorded on 256 fixed training digits after every epoch: the first "
                   "layer's gradient norm and update/weight ratio, the first hidden layer's "
                   "saturated or dead share, and the gradient noise scale. `digitlab inspect "
                   "RUN` draws every layer of one run."),
    "activation_histograms": ("Activations over training", "Each variant's first hidden "
                              "layer: one column per epoch, the histogram of its outputs "
                              "(fast.ai's colourful dimension)."),
}  # fmt: skip
MINUS = "\u2212"  # a typographic minus, as the record's sentences write it


# --------------------------------------------------------------------------------- numbers
def amount(metric: str, value: float | None, *, signed: bool = True, unit: bool = True) -> str:
    """A value (or a difference) of `metric` in its units, as the record's sentences write it
    (`conclusions.amount`: accuracy in points, losses with 3 decimals…); "–" for none."""
    if value is None or not math.isfinite(value):
        return "–"
    return conclusions.amount(metric, value, signed=signed, unit=unit)


def metric_name(metric: str) -> str:
    """ "test accuracy", "generalisation gap", … (the record's own words for its metrics)."""
    return conclusions.WORDS[metric][0]


def estimate(test: Test) -> str:
    """A tested difference and its interval in the metric's units: "+0.42 points [−0.10,
    +0.94]"; without an interval just the estimate; "–" without either."""
    if test.estimate is None:
        return "–"
    text = amount(test.metric, test.estimate)
    if test.low is not None and test.high is not None:
        low, high = (amount(test.metric, x, unit=False) for x in (test.low, test.high))
        text += f" [{low}, {high}]"
    return text


def level_text(test: Test) -> str:
    """ "99.4% interval", the simultaneous level of the test's interval; "" without one."""
    if test.level is None or test.low is None:
        return ""
    return f"{conclusions.percent(test.level)} interval"


def compared(variants: Sequence[str]) -> str:
    """ "a − b", or the interaction "(a − b) − (c − d)"."""
    if len(variants) == 4:
        a, b, c, d = variants
        return f"({a} {MINUS} {b}) {MINUS} ({c} {MINUS} {d})"
    return f" {MINUS} ".join(variants)


def verdict_text(test: Test) -> str:
    """The verdict in words: "higher", "equivalent within ±0.50 points", "inconclusive"…"""
    if test.verdict == "equivalent":
        return f"equivalent within ±{amount(test.metric, test.margin, signed=False)}"
    return test.verdict


def duration(seconds: float) -> str:
    """ "240.5 s (4.0 min)": seconds, and minutes or hours beside them once they are many."""
    text = f"{seconds:,.1f} s"
    if seconds >= 3600:
        return f"{text} ({seconds / 3600:.1f} h)"
    if seconds >= 60:
        return f"{text} ({seconds / 60:.1f} min)"
    return text


# ---------------------------------------------------------------------------------- the budget
def fit_digits(record: ExperimentRecord) -> int | None:
    """The digits each run trained on (the budget's fit_samples; older records: computed from
    train_samples and validation_split as `fit` splits them)."""
    budget = record.budget
    if isinstance(budget.get("fit_samples"), int):
        return budget["fit_samples"]
    samples, split = budget.get("train_samples"), budget.get("validation_split")
    if isinstance(samples, int) and isinstance(split, int | float):
        return math.floor(samples * (1.0 - split))
    return None


def variant_digits(record: ExperimentRecord) -> list[int]:
    """The distinct counts of digits the variants' runs trained on, where the record says."""
    return sorted({v.fit_digits for v in record.variants if v.fit_digits is not None})


def epochs_text(record: ExperimentRecord, epochs: int) -> str:
    """ "20 epochs", or "20 to 60 epochs" where a variant needed more for its minimum of
    updates (few digits or a large batch take few updates an epoch)."""
    counts = {v.epochs for v in record.variants if v.epochs is not None} or {epochs}
    if len(counts) == 1:
        return _count(counts.pop(), "epoch")
    return f"{min(counts):,} to {max(counts):,} epochs (each variant's minimum of updates)"


def digits_text(record: ExperimentRecord, fit: int) -> str:
    """ "5,000", or "500 to 20,000" where the variants trained on different counts."""
    sizes = variant_digits(record)
    return f"{min(sizes):,} to {max(sizes):,}" if len(sizes) > 1 else f"{fit:,}"


def budget_sentence(record: ExperimentRecord) -> str:
    """ "Each run trained 20 epochs on 4,800 digits (6,000 with 1,200 held out for
    validation); 10 seeds per variant, and 8 runs tuning learning rates." from the budget
    the runs actually had ("" if the record doesn't say)."""
    budget, fit = record.budget, fit_digits(record)
    epochs, samples, seeds = (budget.get(k) for k in ("epochs", "train_samples", "seeds"))
    if not isinstance(epochs, int) or fit is None:
        return ""
    text = f"Each run trained {epochs_text(record, epochs)}"
    text += f" on {digits_text(record, fit)} digits"
    if isinstance(samples, int) and samples > fit:
        held = samples - fit
        sweep = len(variant_digits(record)) > 1  # each size validates after its own digits
        text += (
            f", each with the {held:,} after them held out for validation"
            if sweep
            else f" ({samples:,} with {held:,} held out for validation)"
        )
    if isinstance(seeds, int):
        text += f"; {_count(seeds, 'seed')} per variant"
    tuning = sum(len(v.learning_rate_grid) for v in record.variants)
    if tuning:
        text += f", and {_count(tuning, 'run')} tuning learning rates"
    return text + "."


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


# ----------------------------------------------------------------------- what each variant changes
def changes(record: ExperimentRecord) -> tuple[list[str], dict[str, list[str]]]:
    """Each variant's changes against its preset as short diffs, and those every variant
    shares (said once, not in every row): `(shared, {variant: [diff, …]})`."""
    diffs = {v.name: variant_changes(v) for v in record.variants}
    lists = list(diffs.values())
    shared = [d for d in lists[0] if all(d in other for other in lists)] if len(lists) > 1 else []
    return shared, {name: [d for d in items if d not in shared] for name, items in diffs.items()}


def variant_changes(variant: VariantResult) -> list[str]:
    """What the variant changes in its preset, in a few words each: "dropout 0.2 → 0.5",
    "units 100 → 1024", "optimizer adam → sgd", "lr 0.03 (tuned)", "batch 32 → 1,024"."""
    from digitlab.presets import get_preset, preset_names

    spec = variant.spec
    preset_name = str(spec.get("preset", "seed"))
    if preset_name not in preset_names():
        return [f"preset {preset_name}"]
    preset = get_preset(preset_name)
    out = [f"preset {preset_name}"] if preset_name != "seed" else []
    if isinstance(spec.get("layers"), list | tuple):
        out += _layer_changes(list(preset.layers), list(spec["layers"]))
    scaling = spec.get("input_scaling")
    if scaling in INPUT_SCALING_NAMES and scaling != "unit":
        out.append(f"{INPUT_SCALING_NAMES['unit']} → {INPUT_SCALING_NAMES[scaling]}")
    train = spec.get("train") if isinstance(spec.get("train"), dict) else {}
    defaults = preset.train.model_dump(mode="json")
    for key, value in train.items():
        if key not in ("batch_size", "learning_rate") and value != defaults.get(key):
            out.append(f"{key.replace('_', ' ')} {_value(defaults.get(key))} → {_value(value)}")
    out += _rate_change(variant, preset.train.learning_rate)
    if isinstance(spec.get("train_digits"), int):
        out.append(f"{variant.fit_digits or spec['train_digits']:,} training digits")
    before = preset.train.batch_size
    if spec.get("full_batch"):
        out.append(f"batch {before:,} → {variant.batch_size:,} (full batch)")
    elif variant.batch_size != before:
        out.append(f"batch {before:,} → {variant.batch_size:,}")
    return out


def _rate_change(variant: VariantResult, before: float | None) -> list[str]:
    rate = variant.learning_rate
    if rate is None:
        return []
    if variant.learning_rate_grid or variant.spec.get("learning_rates"):
        return [f"lr {rate:g} (tuned)"]
    if before is None:
        return [f"lr {rate:g}"]
    return [f"lr {before:g} → {rate:g}"] if rate != before else []


def _value(value: Any) -> str:
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _layer_changes(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[str]:
    """The layers' differences as features: hidden-layer count, units, activations, dropout,
    batch norm, other layer types; the whole new stack only if none of those tells them apart."""
    old, new = _features(before), _features(after)
    out = []
    for key in ("hidden layers", "units", "activation", "dropout"):
        if old[key] != new[key]:
            out.append(f"{key} {old[key]} → {new[key]}")
    for kind in sorted(set(old["other"]) | set(new["other"])):
        n, m = old["other"].get(kind, 0), new["other"].get(kind, 0)
        if n != m:
            out.append(f"+ {kind} ×{m - n}" if m > n else f"{MINUS} {kind} ×{n - m}")
    if not out and before != after:
        from digitlab.html import layer_text

        out.append("layers " + ", ".join(layer_text(layer) for layer in after))
    return out


def _features(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """A layer stack summarised: hidden Dense layers (the last Dense is the output), their
    units and activations (an Activation layer counts for the Dense before it), dropout
    rates, and how many layers of each other type."""
    output = max((i for i, layer in enumerate(layers) if layer.get("type") == "Dense"), default=-1)
    units, activations, rates, other = [], [], [], {}
    for i, layer in enumerate(layers):
        kind = layer.get("type")
        if kind == "Dense" and i != output:
            units.append(layer.get("units"))
            if layer.get("activation") not in (None, "linear"):
                activations.append(layer["activation"])
        elif kind == "Activation":
            activations.append(layer.get("activation"))
        elif kind == "Dropout":
            rates.append(layer.get("rate"))
        elif kind != "Dense":
            other[_layer_name(kind)] = other.get(_layer_name(kind), 0) + 1
    return {
        "hidden layers": str(len(units)),
        "units": _same_or_each(units),
        "activation": _same_or_each(activations),
        "dropout": _same_or_each(rates) if rates else "0",
        "other": other,
    }


def _layer_name(kind: Any) -> str:
    return {"BatchNormalization": "batch norm"}.get(str(kind), str(kind))


def _same_or_each(values: list[Any]) -> str:
    """ "100" when all are 100; "sigmoid, relu, relu" when they differ; "–" for none."""
    shown = [_value(v) for v in values]
    if not shown:
        return "–"
    return shown[0] if len(set(shown)) == 1 else ", ".join(shown)


def grid_text(variant: VariantResult) -> str:
    """A tuned variant's grid: "0.01: 91.20% · 0.03: 93.40% (chosen) · 0.1: diverged"."""
    from digitlab.html import percent

    points = []
    for point in variant.learning_rate_grid:
        result = (
            "diverged"
            if point.diverged
            else "failed, not trained"
            if point.failed
            else percent(point.val_accuracy)
        )
        chosen = " (chosen)" if point.learning_rate == variant.learning_rate else ""
        points.append(f"{point.learning_rate:g}: {result}{chosen}")
    return " · ".join(points)


# ----------------------------------------------------------------------------- claims and tests
def claim_rows(record: ExperimentRecord) -> list[dict[str, str]]:
    """The primary claims as the report's short table: the claim, what was measured (in the
    metric's units, with its interval), the verdict and the literature check."""
    return [
        {
            "name": claim.name,
            "statement": claim.statement,
            "anchor": claim.anchor,
            "compared": compared(claim.variants),
            "metric": metric_name(claim.metric),
            "estimate": estimate(claim),
            "level": level_text(claim),
            "verdict": verdict_text(claim),
            "expect": claim.expect,
            "literature": claim.literature,
            "why": claim.why,
        }
        for claim in record.claims
    ]


def comparison_rows(record: ExperimentRecord) -> list[dict[str, str]]:
    """Every test the experiment printed, claims first: the difference and its interval,
    Holm-adjusted p values (difference and equivalence), verdict, power at the margin."""
    from digitlab.html import percent

    rows = []
    for test in (*record.claims, *record.tests):
        metric = test.metric
        rows.append(
            {
                "claim": getattr(test, "name", ""),
                "compared": compared(test.variants),
                "metric": metric_name(metric),
                "n": ", ".join(str(n) for n in test.n),
                "estimate": estimate(test),
                "level": level_text(test),
                "p": _p(test.p_adjusted, "difference p"),
                "p_raw": _p(test.p, "unadjusted p"),
                "p_equivalence": _p(test.p_equivalence_adjusted, "equivalence p"),
                "margin": "±" + amount(metric, test.margin, signed=False),
                "verdict": verdict_text(test),
                "sentence": test.sentence,
                "power": percent(test.power, 0),
                "detectable": amount(metric, test.detectable, signed=False),
                "seeds_needed": "–" if test.seeds_needed is None else f"{test.seeds_needed:,}",
            }
        )
    return rows


def _p(p: float | None, name: str) -> str:
    """ "difference p < 0.001", "equivalence p = 0.012" (`conclusions.format_p`); "" for none."""
    return "" if p is None else conclusions.format_p(p, name)
