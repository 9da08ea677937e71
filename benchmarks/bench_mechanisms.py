"""Mechanisms benchmark (issue 21): each measurement on the notebook's network, and its cost.

On the `seed` preset's network and the first N MNIST training digits (default 5,000):

1. the gradient noise scale `B_simple` (per-example and from two batch sizes) and the
   Hessian's top eigenvalue `λ_max`, at initialisation and after 1 and 5 epochs of the
   preset's own training (Adam, batch 32, dropout 0.2, on these digits); every measurement
   with dropout off;
2. `λ_max` at initialisation with raw (0–255), unit (/255) and per-pixel standardised inputs
   (a `Rescaling` layer in front, as the experiments build them; the same initial weights),
   and the largest stable plain-SGD rate it predicts, `2 / λ_max`;
3. the conditioning of the inputs' covariance and second moment under each scaling (raw,
   unit, standardised, PCA-whitened);
4. the first and last (sigmoid) layers' saturated share at initialisation, predicted from the
   pre-activation scale and measured, under each scaling.

Each measurement is timed, wall and CPU seconds of this process (the machine is shared: CPU
time is what the measurement itself costs), compilation included. Target: ≤ 30 s each on 2
cores. Prints Markdown tables (for benchmarks/RESULTS.md, "Mechanisms (issue 21)").

`--recorder` measures instead what `mechanisms.recorder.MechanismRecorder` (the training
record every `digitlab train` run keeps) costs an epoch: the seed preset on all 60,000 MNIST
digits (its 20% validation split, batch 32), `--recorder-epochs` epochs, `--repeats` fits
with and without it, interleaved; each of its calls timed apart (the first one traces its
programs; a noise-scale point adds its batch gradients), against the epoch's own time (the
recorder runs after the epoch's clock stops). Target: ≤ 5% of an epoch.

    .venv/bin/python benchmarks/bench_mechanisms.py
    .venv/bin/python benchmarks/bench_mechanisms.py --train-samples 2000 --json-out m.json
    .venv/bin/python benchmarks/bench_mechanisms.py --recorder --recorder-epochs 4 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras
import numpy as np

from digitlab import fastfit
from digitlab.data import PIXEL_MAX, load_dataset
from digitlab.mechanisms import (
    SCALINGS,
    input_conditioning,
    max_stable_learning_rate,
    noise_scale,
    noise_scale_two_batches,
    scale_inputs,
    sigmoid_saturation,
    top_hessian_eigenvalue,
)
from digitlab.model import build_model, compile_model, prepare_inputs
from digitlab.presets import get_preset

SEED = 0
TIMES: list[dict] = []  # every measurement's cost


def timed(label: str, function, *args, **kwargs):
    """`function(*args, **kwargs)`, its wall and CPU seconds recorded under `label`."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    TIMES.append(
        {
            "measurement": label,
            "wall_s": time.perf_counter() - wall,
            "cpu_s": time.process_time() - cpu,
            "load": os.getloadavg()[0],
        }
    )
    return result


def seed_model(scaling: str, pixels: np.ndarray):
    """The seed preset's network with the experiments' `Rescaling` for `scaling` in front,
    compiled; the same initial weights for every scaling (the seed is set before building)."""
    spec = get_preset("seed")
    layers = list(spec.layers)
    if scaling == "raw":
        layers.insert(0, {"type": "Rescaling", "scale": float(PIXEL_MAX)})
    elif scaling == "standardize":
        mean, std = pixels.mean(axis=0), pixels.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        scale, offset = (1 / std).tolist(), (-mean / std).tolist()
        layers.insert(0, {"type": "Rescaling", "scale": scale, "offset": offset})
    spec = spec.replace(layers=layers)
    keras.utils.set_random_seed(SEED)
    model = build_model(spec)
    compile_model(model, spec, train_samples=len(pixels))
    return model


def training_points(x: np.ndarray, y: np.ndarray) -> list[dict]:
    """B_simple (both estimators) and λ_max at initialisation and after 1 and 5 epochs."""
    model = seed_model("unit", x)
    rows, done = [], 0
    for epochs in (0, 1, 5):
        if epochs > done:
            history = fastfit.fit(
                model, x, y, batch_size=32, epochs=epochs, initial_epoch=done, verbose=0, seed=SEED
            )
            done = epochs
        loss = model.evaluate(x, y, batch_size=1000, verbose=0, return_dict=True)["loss"]
        per_example = timed(f"B_simple per-example, epoch {epochs}", noise_scale, model, x, y)
        two = timed(f"B_simple two batches, epoch {epochs}", noise_scale_two_batches, model, x, y)
        top = timed(f"λ_max, epoch {epochs}", top_hessian_eigenvalue, model, x, y)
        rows.append(
            {
                "epochs": epochs,
                "train_loss_dropout_off": loss,
                "train_loss_fit": history["loss"][-1] if epochs else None,
                "per_example": per_example.to_dict(),
                "two_batches": two.to_dict(),
                "top_eigenvalue": top.to_dict(),
                "max_stable_rate": max_stable_learning_rate(top.value),
            }
        )
    return rows


def scaling_points(x: np.ndarray, y: np.ndarray) -> list[dict]:
    """Per input scaling: λ_max and saturation at initialisation, and the inputs' conditioning."""
    rows = []
    for scaling in SCALINGS:
        row = {"scaling": scaling}
        scaled = timed(f"scale inputs, {scaling}", scale_inputs, x, scaling)
        row["covariance"] = timed(f"conditioning, {scaling}", input_conditioning, scaled).to_dict()
        second = timed(f"second moment, {scaling}", input_conditioning, scaled, centred=False)
        row["second_moment"] = second.to_dict()
        if scaling != "whiten":  # the network's own input scalings (a Rescaling layer in front)
            model = seed_model(scaling, x)
            top = timed(f"λ_max at init, {scaling}", top_hessian_eigenvalue, model, x, y)
            row["top_eigenvalue"] = top.to_dict()
            row["max_stable_rate"] = max_stable_learning_rate(top.value)
            found = timed(f"saturation at init, {scaling}", sigmoid_saturation, model, x)
            row["saturation"] = [layer.to_dict() for layer in found]
        rows.append(row)
    return rows


def markdown(result: dict) -> str:
    lines = [
        f"{result['digits']:,} MNIST training digits, `seed` preset, dropout off in every "
        "measurement; load average {:.1f}–{:.1f}.".format(*result["load"]),
        "",
        "| epochs | train loss | B_simple per-example ± jackknife SE "
        "| B_simple two batches (32, all) | tr Σ | \\|G\\|² | λ_max | 2/λ_max |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["training"]:
        pe, two, top = row["per_example"], row["two_batches"], row["top_eigenvalue"]
        lines.append(
            f"| {row['epochs']} | {row['train_loss_dropout_off']:.3f} | "
            f"{pe['simple']:,.0f} ± {pe['standard_error']:,.0f} | "
            f"{two['simple']:,.0f} | {pe['trace_covariance']:.3g} | {pe['gradient_norm_sq']:.3g} "
            f"| {top['value']:.4g} ({top['iterations']} HVPs) | {row['max_stable_rate']:.3g} |"
        )
    lines += [
        "",
        "| inputs | λ_max at init | 2/λ_max | covariance: λ_max, κ, λ_max/median | "
        "second moment: λ_max, κ, λ_max/median | constant px | null dirs "
        "| saturated, 1st sigmoid layer: predicted / measured | output layer |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["scalings"]:
        cov, sec = row["covariance"], row["second_moment"]
        top = row.get("top_eigenvalue")
        sat = row.get("saturation") or []
        cells = [
            row["scaling"],
            f"{top['value']:.4g}" if top else "–",
            f"{row['max_stable_rate']:.3g}" if top else "–",
            f"{cov['top']:.3g}, {cov['condition_number']:.2g}, {cov['top_to_median']:.3g}",
            f"{sec['top']:.3g}, {sec['condition_number']:.2g}, {sec['top_to_median']:.3g}",
            str(cov["constant_pixels"]),
            str(cov["null_directions"]),
            *(f"{s['predicted']:.3g} / {s['measured']:.3g}" for s in sat[:1]),
            *(f"{s['predicted']:.3g} / {s['measured']:.3g}" for s in sat[1:2]),
        ]
        cells += ["–"] * (9 - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| measurement | wall s | CPU s | load |", "|---|---|---|---|"]
    lines += [
        f"| {t['measurement']} | {t['wall_s']:.1f} | {t['cpu_s']:.1f} | {t['load']:.1f} |"
        for t in result["times"]
    ]
    return "\n".join(lines)


class _EpochClock(keras.callbacks.Callback):
    """Each epoch's wall and CPU seconds, from its start to its end (validation included)."""

    def __init__(self):
        super().__init__()
        self.epochs: list[tuple[float, float]] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        wall, cpu = self._start
        self.epochs.append((time.perf_counter() - wall, time.process_time() - cpu))


def _timed_recorder(x, y):
    """A `MechanismRecorder` whose every record (and noise-scale point) is timed."""
    from digitlab.mechanisms.recorder import MechanismRecorder
    from digitlab.model import PIXEL_SCALE

    class Timed(MechanismRecorder):
        def _record(self, epoch):
            wall, cpu = time.perf_counter(), time.process_time()
            noise_before = self.values.get("noise_scale", {}).get("epochs", []).copy()
            super()._record(epoch)
            noise = self.values.get("noise_scale", {}).get("epochs", []) != noise_before
            self.calls.append(
                {
                    "epoch": epoch,
                    "noise": noise,
                    "first": not self.calls,
                    "wall_s": time.perf_counter() - wall,
                    "cpu_s": time.process_time() - cpu,
                }
            )

    recorder = Timed(x, y, 32, input_scale=PIXEL_SCALE)
    recorder.calls = []
    return recorder


def recorder_overhead(epochs: int, repeats: int) -> dict:
    """Fits of the seed preset with and without the recorder, interleaved; see the docstring."""
    from digitlab.evaluation import loss_targets
    from digitlab.model import PIXEL_SCALE

    spec = get_preset("seed")
    (images, labels), _ = load_dataset("mnist")
    x, y = images.reshape(len(images), -1), loss_targets(labels, spec, 10)
    fits, calls = [], []
    for repeat in range(repeats):
        for recorded in (False, True) if repeat % 2 == 0 else (True, False):
            keras.utils.set_random_seed(SEED)
            model = build_model(spec)
            compile_model(model, spec)
            clock = _EpochClock()
            recorder = [_timed_recorder(x, y)] if recorded else []
            fastfit.fit(
                model,
                x,
                y,
                batch_size=32,
                epochs=epochs,
                verbose=0,
                seed=SEED,
                validation_split=spec.train.validation_split,
                input_scale=PIXEL_SCALE,
                callbacks=[clock, *recorder],
            )
            fits.append({"recorder": recorded, "epochs": clock.epochs[1:]})  # 1st compiles
            if recorded:
                calls += recorder[0].calls
                values = recorder[0].values
    return {
        "fits": fits,
        "calls": calls,
        "noise_scale": values.get("noise_scale"),
        "load": os.getloadavg()[0],
    }


def recorder_markdown(result: dict) -> str:
    median = lambda rows, i: float(np.median([r[i] for r in rows]))  # noqa: E731
    plain = [e for f in result["fits"] if not f["recorder"] for e in f["epochs"]]
    recorded = [e for f in result["fits"] if f["recorder"] for e in f["epochs"]]
    calls = result["calls"]
    kinds = {
        "first record (traces its two programs; epoch 0, with a noise point)": [
            c for c in calls if c["first"]
        ],
        "an epoch's record (activations, gradient norms, update ratios)": [
            c for c in calls if not c["first"] and not c["noise"]
        ],
        "an epoch's record with a noise-scale point (32 batch gradients of 32)": [
            c for c in calls if not c["first"] and c["noise"]
        ],
    }
    epoch_wall, epoch_cpu = median(plain, 0), median(plain, 1)
    lines = [
        f"Load average {result['load']:.1f}. Epochs (after the first): without the recorder "
        f"{epoch_wall:.2f} s wall, {epoch_cpu:.2f} s CPU (median of {len(plain)}); with it "
        f"{median(recorded, 0):.2f} s wall, {median(recorded, 1):.2f} s CPU (its own time "
        "not counted: it runs after the epoch's clock).",
        "",
        "| recorder call | n | wall s (median) | CPU s (median) | CPU, % of an epoch's |",
        "|---|---|---|---|---|",
    ]
    costs = {}
    for label, rows in kinds.items():
        if rows:
            wall, cpu = (
                median([(c["wall_s"], c["cpu_s"]) for c in rows], 0),
                median([(c["wall_s"], c["cpu_s"]) for c in rows], 1),
            )
            costs[label] = cpu
            lines.append(
                f"| {label} | {len(rows)} | {wall:.3f} | {cpu:.3f} | {100 * cpu / epoch_cpu:.1f}% |"
            )
    first, plain_cost, noise_cost = (costs.get(label, 0.0) for label in kinds)
    steady = (6 * plain_cost + 4 * noise_cost) / 10  # epochs 1–10: noise after 1, 2, 5, 10
    lines += [
        "",
        f"A 10-epoch run: {100 * steady / epoch_cpu:.1f}% of an epoch's CPU time per epoch "
        "(6 plain records, 4 with a noise point), and once the first record, "
        f"{first:.2f} s CPU ({100 * first / (10 * epoch_cpu):.1f}% of the 10 epochs); "
        f"in all {100 * (first + 10 * steady) / (10 * epoch_cpu):.1f}%.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-samples", type=int, default=5_000, help="MNIST digits used")
    parser.add_argument("--json-out", help="also write the results here")
    parser.add_argument("--recorder", action="store_true", help="the recorder's overhead only")
    parser.add_argument("--recorder-epochs", type=int, default=4, help="epochs per fit")
    parser.add_argument("--repeats", type=int, default=2, help="fits with and without it")
    args = parser.parse_args()
    if args.recorder:
        result = recorder_overhead(args.recorder_epochs, args.repeats)
        if args.json_out:
            with open(args.json_out, "w", encoding="utf-8") as file:
                json.dump(result, file, indent=1)
        print(recorder_markdown(result))
        return

    (images, labels), _ = load_dataset("mnist")
    x = prepare_inputs(images[: args.train_samples], get_preset("seed").input_shape)
    y = labels[: args.train_samples]
    started = os.getloadavg()[0]
    result = {"digits": len(x), "training": training_points(x, y)}
    result["scalings"] = scaling_points(x, y)
    result["times"] = TIMES
    result["load"] = (started, os.getloadavg()[0])
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as file:
            json.dump(result, file, indent=1)
    print(markdown(result))


if __name__ == "__main__":
    main()
