"""Predict, then measure (issue 21): a mechanism measured before the runs, judged after them.

Before the long runs, a built-in experiment measures the mechanism behind its note on its
own network (`digitlab.mechanisms`, seconds on 2 cores), prints what it predicts, and keeps
it in the folder's `prediction.json`, written before the first run, with the learner's own
`--guess`. After every finished run the record is judged again (`verdicts`): each predicted
consequence against its measured interval, "held", "missed by …" or "inconclusive", and the
figure that overlays prediction and result (`figures_prediction`) leads the report.

The mechanism each built-in measures (`definitions.MECHANISMS`):

- **batch-size, the gradient noise scale.** `B_simple` at initialisation on the baseline's
  network (per-example gradients, ±jackknife SE). Taking `B_crit ≈ B_simple` (McCandlish et
  al. 2018, §2.3), digits to the target grow as `E(B) = E_min (1 + B / B_crit)`: relative to
  the baseline's batch `B₀`, `E(B) / E(B₀) = (B + B_crit) / (B₀ + B_crit)`. Anchored on the
  baseline's measured digits (`mechanisms.anchor_tradeoff`), every other batch size tests it.
- **normalization, curvature and conditioning.** Per SGD variant, `λ_max` of the loss's
  Hessian at initialisation gives the largest stable rate `2 (1 + β) / λ_max`, tested
  against the rates its grid trained at and diverged at; the spread `λ_max / median` of the
  inputs' second moment (the Hessian of a linear unit, LeCun et al. 1998, §4.3) orders how
  fast plain SGD should learn under each input scaling; the first sigmoid layer's saturated
  share is predicted from the pre-activation scale and tested against the runs' epoch 0.
- **dropout, a short run's gap.** The two networks without dropout train `SHORT_EPOCHS`
  epochs; the one whose validation loss pulls away from its training loss faster should
  gain more from dropout (the interaction claim) and keep the larger gap.
- **dropout-size, a short run's gap at each size.** The network without dropout trains
  `SHORT_UPDATES` updates on each training-set size; dropout should gain most where the gap
  is largest and least where it is smallest, and those two sizes' full runs keep that order.

A resumed experiment keeps the prediction it made before its first run; one whose runs
started before predictions existed gets none (it would no longer be made *before*).
"""

from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.errors import RunError
from digitlab.experiments import plan, verdicts
from digitlab.experiments.conclusions import SMOKE
from digitlab.experiments.definitions import MECHANISMS
from digitlab.experiments.schema import ExperimentRecord, Prediction
from digitlab.files import write_text
from digitlab.runs.folder import read_json_object
from digitlab.schema import validate

PREDICTION_FILE = "prediction.json"  # written before the first run; read back by `judged`
PREDICTION_PNG = "prediction.png"
# Digits each measurement takes (the first of those fit trains on): B_simple's per-example
# gradients ~4 s on 2 cores, each network's λ_max ~5 s CPU (benchmarks/RESULTS.md); λ_max of
# the mean loss over fewer digits is larger (raw pixels: 2/λ_max 0.010 on 480, 0.031 on 2,000).
NOISE_DIGITS = 5_000
HESSIAN_DIGITS = 5_000
SHORT_EPOCHS = 3  # the dropout prediction's runs without dropout
SHORT_UPDATES = 500  # dropout-size's: the same updates at every size (a sixth of its runs')
CONCLUSION = "The prediction made before the runs"  # the conclusion's line about it
TITLES = {
    "noise-scale": "the gradient's noise scale",
    "curvature": "curvature, conditioning and saturation at initialisation",
    "short-run-gap": "the generalisation gap of a short run without dropout",
    "size-gap": "the generalisation gap of short runs without dropout at each training size",
}


# ---------------------------------------------------------------------------------- the file
def read_prediction(folder: Path) -> tuple[Prediction | None, str | None] | None:
    """The prediction and guess made before `folder`'s runs; None if it has no file.

    Raises:
        RunError: the file is unreadable or not a prediction.
    """
    path = Path(folder) / PREDICTION_FILE
    data = read_json_object(path, "move it away to predict again")
    if data is None:
        return None
    prediction = data.get("prediction")
    if prediction is not None:
        prediction = validate(Prediction, prediction, str(path), error=RunError)
    guess = data.get("guess")
    return prediction, guess if isinstance(guess, str) else None


def write_prediction(folder: Path, prediction: Prediction | None, guess: str | None) -> Path:
    """Write `prediction.json` atomically: the prediction (or null) and the guess."""
    data = {
        "prediction": json.loads(prediction.model_dump_json()) if prediction else None,
        "guess": guess,
    }
    return write_text(Path(folder) / PREDICTION_FILE, json.dumps(data, indent=2) + "\n")


# --------------------------------------------------------------------------------- the stage
def before_runs(experiment: Any, guess: str | None = None, console=None) -> Prediction | None:
    """Measure the experiment's mechanism, print its prediction and store it with `guess`,
    before the first run; a resumed experiment prints the one it stored.

    Args:
        experiment: the runner's experiment (its folder, definition, budget, specs, inputs).
        guess: the learner's own guess, stored beside the prediction.
        console: a Rich console (default: stderr).
    """
    from rich.console import Console

    console = console or Console(stderr=True)
    say = lambda text: console.print(text, highlight=False, markup=False, soft_wrap=True)  # noqa: E731
    stored = read_prediction(experiment.folder)
    if stored is not None:
        prediction, _ = stored
        if prediction is not None:
            say("The prediction made before the runs:")
            for line in prediction.statement:
                say(f"  {line}")
        return prediction
    mechanism = MECHANISMS.get(experiment.definition.name)
    started = bool(experiment.done) or any(t.runs for t in experiment.tuning.values())
    prediction = None
    if mechanism is not None and not started:
        say(f"Predict, then measure: {TITLES[mechanism]}, measured before the runs…")
        began, cpu = time.perf_counter(), time.process_time()
        found = MEASURES[mechanism](experiment)
        if found is not None:
            measured, statement = found
            prediction = Prediction(
                mechanism=mechanism,
                statement=tuple(statement),
                measured={**measured, "cpu_seconds": round(time.process_time() - cpu, 2)},
                made=datetime.now(),
                seconds=round(time.perf_counter() - began, 2),
            )
            for line in statement:
                say(f"  {line}")
    write_prediction(experiment.folder, prediction, guess)
    return prediction


@contextmanager
def _measurement_of(folder: Path, prediction: Prediction):
    """Judging or drawing `prediction.measured`, which a hand-edited file may have damaged:
    one line naming the file instead of a traceback.

    Raises:
        RunError: the measurement lacks what its judge or its figure reads.
    """
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        raise RunError(
            f"{Path(folder) / PREDICTION_FILE}: its measurement is not what the "
            f"{prediction.mechanism} prediction holds ({type(exc).__name__}: {exc}); move it "
            "away to judge the runs without it"
        ) from None


def judged(folder: Path, record: ExperimentRecord, draw: bool = False) -> ExperimentRecord:
    """`record` with the stored prediction judged on its runs and the guess; with `draw`,
    the prediction figure too, first among the plots. A folder without `prediction.json`
    gives the record unchanged."""
    stored = read_prediction(folder)
    if stored is None:
        return record
    prediction, guess = stored
    update: dict[str, Any] = {"guess": guess}
    if prediction is not None:
        with _measurement_of(folder, prediction):
            parts = JUDGES[prediction.mechanism](record, prediction.measured)
        if record.smoke:  # one seed, one epoch: nothing to hold or miss
            parts = [p | {"verdict": "inconclusive", "why": SMOKE} for p in parts]
        verdict, sentence = verdicts.overall(parts)
        prediction = Prediction.model_validate(
            {**prediction.model_dump(), "verdict": verdict, "sentence": sentence, "parts": parts}
        )
        update["prediction"] = prediction
        update["conclusion"] = (
            *(line for line in record.conclusion if not line.startswith(CONCLUSION)),
            f"{CONCLUSION} from {TITLES[prediction.mechanism]}: {sentence}.",
        )
    record = record.model_copy(update=update)
    if draw and prediction is not None and prediction.parts:
        from digitlab.experiments.figures_prediction import prediction_figure
        from digitlab.plots import save_figure

        with _measurement_of(folder, prediction):
            figure = prediction_figure(record)
        save_figure(figure, Path(folder) / PREDICTION_PNG)
        plots = (PREDICTION_PNG, *(p for p in record.plots if p != PREDICTION_PNG))
        record = record.model_copy(update={"plots": plots})
    return record


# ----------------------------------------------------------------------------- measurements
def _network(spec, classes: int):
    """The variant's network at seed 0's initial weights (the weights its seed-0 run starts
    from), compiled as its runs compile it."""
    import keras

    from digitlab.model import build_model, compile_model

    keras.utils.set_random_seed(0)
    model = build_model(spec, num_classes=classes)
    compile_model(model, spec, num_classes=classes, train_samples=spec.train.train_samples)
    return model


def _noise_scale(experiment) -> tuple[dict, list[str]] | None:
    """B_simple at initialisation on the baseline's network, and the digits each batch size
    should take to the target relative to the baseline's."""
    from digitlab.mechanisms import noise_scale

    specs = experiment.specs
    batches = {name: min(s.train.batch_size, plan.fit_digits(s)) for name, s in specs.items()}
    anchor = experiment.definition.baseline_name
    if len(set(batches.values())) < 2:
        return None
    x, y, _ = experiment.inputs.for_spec(specs[anchor])
    x, y = x[:NOISE_DIGITS], y[:NOISE_DIGITS]
    noise = noise_scale(_network(specs[anchor], experiment.classes), x, y)
    finite = np.isfinite(noise.simple)
    measured = {
        "variant": anchor,
        "noise_scale": float(noise.simple) if finite else None,
        "standard_error": float(noise.standard_error)
        if np.isfinite(noise.standard_error)
        else None,
        "trace_covariance": noise.trace_covariance,
        "gradient_norm_sq": noise.gradient_norm_sq,
        "digits": noise.examples,
        "batch_sizes": batches,
    }
    if not finite:
        return measured, [
            f"The gradient's noise scale at the start could not be resolved on {len(x):,} "
            "digits (its squared mean gradient measured ≤ 0): nothing is predicted."
        ]
    b, error = noise.simple, noise.standard_error
    ratios = ", ".join(
        f"{name} ×{verdicts.examples_ratio(batch, batches[anchor], b):.2g}"
        for name, batch in batches.items()
        if name != anchor
    )
    return measured, [
        f"Noise scale at the start: B_simple ≈ {b:,.0f} ± {error:,.0f} digits ({anchor}'s "
        f"network, per-example gradients of {len(x):,} digits).",
        f"Prediction: batches up to ~{b:,.0f} digits should reach the target after about the "
        "same digits, in proportionally fewer updates; batches above it should need nearly "
        f"proportionally more epochs. Digits to the target, relative to {anchor}: {ratios}.",
    ]


def _sgd_variants(experiment) -> list:
    """The variants trained by plain SGD without batch normalisation (whose inference-mode
    loss is not the one SGD follows)."""
    found = []
    for variant in experiment.definition.variants:
        spec = experiment.specs[variant.name]
        normalised = any(layer.get("type") == "BatchNormalization" for layer in spec.layers)
        if spec.train.optimizer == "sgd" and not normalised:
            found.append(variant)
    return found


def _curvature(experiment) -> tuple[dict, list[str]] | None:
    """Per SGD variant λ_max → 2(1 + β)/λ_max; per input scaling the inputs' spread and the
    first sigmoid layer's saturation at initialisation."""
    from digitlab.mechanisms import (
        input_conditioning,
        max_stable_learning_rate,
        scale_inputs,
        sigmoid_saturation,
        top_hessian_eigenvalue,
    )

    variants = _sgd_variants(experiment)
    if not variants:
        return None
    rates, spreads, saturation = {}, {}, {}
    for variant in variants:
        spec = experiment.specs[variant.name]
        x, y, batch = experiment.inputs.for_spec(spec)
        model = _network(spec, experiment.classes)
        top = top_hessian_eigenvalue(model, x[:HESSIAN_DIGITS], y[:HESSIAN_DIGITS])
        momentum = float(getattr(model.optimizer, "momentum", 0.0) or 0.0)
        if top.value > 0:
            rates[variant.name] = {
                "top_eigenvalue": top.value,
                "rate": max_stable_learning_rate(top.value, momentum),
                "momentum": momentum,
            }
        if variant.layers is None:  # the preset's network: only the input scaling differs
            spread = input_conditioning(scale_inputs(x, variant.input_scaling), centred=False)
            spreads[variant.name] = {
                "scaling": variant.input_scaling,
                "top_to_median": spread.top_to_median,
                "condition_number": spread.condition_number,
            }
            layers = sigmoid_saturation(model, batch)
            if layers:
                saturation[variant.name] = {
                    "predicted": layers[0].predicted,
                    "measured": layers[0].measured,
                }
    order = _predicted_order(spreads)
    measured = {
        "stable_rates": rates,
        "conditioning": spreads,
        "order": order,
        "saturation": saturation,
    }
    return measured, _curvature_statement(rates, spreads, order, saturation)


def _predicted_order(spreads: dict[str, dict]) -> list[list[str]]:
    """[better, worse] pairs of variants whose inputs' spreads differ by 2× or more: the
    better-conditioned one should learn faster (equal spreads predict no order)."""
    names = sorted(spreads, key=lambda n: spreads[n]["top_to_median"])
    return [
        [a, b]
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if spreads[b]["top_to_median"] >= 2 * spreads[a]["top_to_median"]
    ]


def _curvature_statement(rates, spreads, order, saturation) -> list[str]:
    lines = []
    if rates:
        listed = ", ".join(f"{n} {r['rate']:.3g}" for n, r in rates.items())
        lines.append(
            "Largest stable plain-SGD rate at the start, 2/λ_max (the top eigenvalue of the "
            f"loss's Hessian): {listed}. SGD should diverge above it."
        )
    if spreads:
        listed = ", ".join(f"{s['scaling']} {s['top_to_median']:,.0f}" for s in spreads.values())
        pairs = "; ".join(f"{a} faster than {b}" for a, b in order) or "no order (equal spreads)"
        lines.append(
            "Conditioning of the inputs (λ_max / median eigenvalue of their second moment, "
            f"the Hessian of a linear unit): {listed}. Under SGD, lower learns faster: {pairs}."
        )
    if saturation:
        listed = ", ".join(f"{n} {s['predicted']:.1%}" for n, s in saturation.items())
        lines.append(
            "Saturated share of the first sigmoid layer at the start (Gaussian approximation "
            f"from the weights' scale and the inputs' norms): {listed}."
        )
    return lines


def _short_run_gap(experiment) -> tuple[dict, list[str]] | None:
    """The gap (validation − training loss) of the interaction claim's two networks without
    dropout after `SHORT_EPOCHS` epochs: where it is larger, dropout should help more."""
    claim = next((c for c in experiment.definition.claims if len(c.variants) == 4), None)
    if claim is None:
        return None
    _, first, _, second = claim.variants  # (a − b) − (c − d): b and d are without dropout
    gaps = {name: _short_gap(experiment, name) for name in (first, second)}
    larger = max(gaps, key=gaps.get)
    sign = 1 if larger == first else -1
    measured = {
        "claim": claim.name,
        "gaps": gaps,
        "epochs": SHORT_EPOCHS,
        "sign": sign,
        "larger": larger,
        "smaller": second if larger == first else first,
    }
    listed = ", ".join(f"{name} {gap:.3f}" for name, gap in gaps.items())
    return measured, [
        f"After {SHORT_EPOCHS} epochs without dropout (seed 0), the gap between validation "
        f"and training loss: {listed}.",
        f"Prediction: {larger} memorises faster, so dropout should help it more (claim "
        f"'{claim.name}': {'higher' if sign > 0 else 'lower'} than 0), and its gap should "
        "stay the larger one after the full runs.",
    ]


def _size_pairs(experiment) -> dict[int, dict[str, str]]:
    """Per training-set size (the digits each epoch trains on), its variant without dropout
    and its variant with: sizes that have exactly one of each."""
    found: dict[int, dict[str, list[str]]] = {}
    for name, spec in experiment.specs.items():
        kind = "with" if any(layer.get("type") == "Dropout" for layer in spec.layers) else "without"
        found.setdefault(plan.fit_digits(spec), {"with": [], "without": []})[kind].append(name)
    return {
        size: {kind: names[0] for kind, names in pair.items()}
        for size, pair in sorted(found.items())
        if len(pair["with"]) == len(pair["without"]) == 1
    }


def _size_gap(experiment) -> tuple[dict, list[str]] | None:
    """The gap of the network without dropout after `SHORT_UPDATES` updates at each size:
    where it is largest dropout should gain most, where smallest least."""
    pairs = _size_pairs(experiment)
    if len(pairs) < 2:
        return None
    sizes = []
    for size, pair in pairs.items():
        spec = experiment.specs[pair["without"]]
        epochs = math.ceil(SHORT_UPDATES / plan.steps_per_epoch(spec.train.batch_size, size))
        gap = _short_gap(experiment, pair["without"], epochs)
        sizes.append({"digits": size, **pair, "epochs": epochs, "gap": gap})
    largest = max(sizes, key=lambda s: s["gap"])
    smallest = min(sizes, key=lambda s: s["gap"])
    if largest is smallest:  # every gap equal: no size to predict a larger gain at
        return None
    measured = {"updates": SHORT_UPDATES, "sizes": sizes, "largest": largest, "smallest": smallest}
    listed = ", ".join(f"{s['digits']:,} digits {s['gap']:.3f}" for s in sizes)
    return measured, [
        f"After {SHORT_UPDATES} updates without dropout (seed 0), the gap between validation "
        f"and training loss: {listed}.",
        f"Prediction: dropout should raise the test accuracy most on {largest['digits']:,} "
        f"digits, where the network memorises fastest, and least on {smallest['digits']:,}; "
        "without dropout, the full runs' gap should stay the larger on "
        f"{largest['digits']:,}.",
    ]


def _short_gap(experiment, name: str, epochs: int = SHORT_EPOCHS) -> float:
    from digitlab import fastfit
    from digitlab.data import load_dataset
    from digitlab.evaluation import loss_targets
    from digitlab.model import prepare_inputs

    spec = experiment.specs[name]
    x_fit, y_fit, _ = experiment.inputs.for_spec(spec)
    x, y = load_dataset(spec.train.dataset, data_dir=experiment.data_dir)[0]
    fit, end = plan.fit_digits(spec), spec.train.train_samples
    x_val = prepare_inputs(x[fit:end], spec.input_shape)
    y_val = loss_targets(y[fit:end], spec, experiment.classes)
    model = _network(spec, experiment.classes)
    fastfit.fit(
        model,
        x_fit,
        y_fit,
        batch_size=spec.train.batch_size,
        epochs=epochs,
        verbose=0,
        seed=0,
    )
    train = model.evaluate(x_fit, y_fit, batch_size=1000, verbose=0, return_dict=True)["loss"]
    val = model.evaluate(x_val, y_val, batch_size=1000, verbose=0, return_dict=True)["loss"]
    return float(val - train)


MEASURES = {
    "noise-scale": _noise_scale,
    "curvature": _curvature,
    "short-run-gap": _short_run_gap,
    "size-gap": _size_gap,
}
JUDGES = {
    "noise-scale": verdicts.noise_scale_parts,
    "curvature": verdicts.curvature_parts,
    "short-run-gap": verdicts.short_run_parts,
    "size-gap": verdicts.size_gap_parts,
}
