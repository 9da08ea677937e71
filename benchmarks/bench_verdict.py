"""The verdict under shift (issue 22): is "confident" right, are non-digits flagged, do the
95% prediction sets hold?

For each run given (or each preset trained here with `--train PRESET[:EPOCHS]`):

1. calibrate it as training does (`confidence.calibrate_run`, timed: the verifier network is
   trained there) unless `--keep`;
2. apply the one verdict (`confidence.verdicts`, as `digitlab predict`, the API and the page
   do) to held-out test digits (`robustness.held_out`: the second half of the test split for
   a run calibrated on the first), clean and under:
   - MNIST-C's 15 corruptions (`digitlab.corruptions`, seed 0): never trained on;
   - handwriting-like shifts (`outliers.shifted`, seed 1000: stroke width, blur, low
     resolution, elastic, faint, drawn), one kind per digit in turn: the verifier trains
     on the same kinds of shift applied to other digits (the training split's);
   - typeset digits, 0–9 in the 22 DejaVu fonts (`ood.typeset_digits`): never trained on;
3. per set: accuracy, the share marked confident (coverage), the accuracy among those
   (selective accuracy; goal ≥ 98%), the share of correct answers flagged, and the 95%
   prediction sets' coverage (all answers, and the not-confident ones) and mean size;
4. non-digits (`ood.generate`: typeset capitals in the DejaVu fonts, scribbles, uniform
   noise, circles/squares/crosses; never trained on): the share flagged and the share
   called "not a digit" (goal ≥ 80% flagged).

    .venv/bin/python benchmarks/bench_verdict.py runs/20261203-110015-seed
    .venv/bin/python benchmarks/bench_verdict.py --train seed --samples 5000
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
from measured_runs import measured_runs

from digitlab import ood, outliers
from digitlab.confidence import calibrate_run, verdicts
from digitlab.corruptions import CORRUPTIONS, corrupt
from digitlab.data import load_dataset
from digitlab.robustness import held_out
from digitlab.runs import load_run

SHIFT_SEED = 1000  # not the verifier's training seed (0)


def judged(run, images: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    probabilities = run.predict_proba(images)
    return probabilities.argmax(axis=1), verdicts(run, images, probabilities)


def digit_row(run, name: str, images: np.ndarray, labels: np.ndarray) -> dict:
    """Accuracy, coverage, selective accuracy, correct flagged and the sets, for digits."""
    predicted, said = judged(run, images)
    right = predicted == labels
    sure = np.array([row["confident"] for row in said], dtype=bool)
    held = np.array(
        [label in row["prediction_set"] for row, label in zip(said, labels, strict=True)]
    )
    sizes = np.array([len(row["prediction_set"]) for row in said])
    return {
        "set": name,
        "digits": len(labels),
        "accuracy": float(right.mean()),
        "confident": float(sure.mean()),
        "selective_accuracy": float(right[sure].mean()) if sure.any() else None,
        "correct_flagged": float(1 - sure[right].mean()) if right.any() else None,
        "set_coverage": float(held.mean()),
        "set_coverage_not_confident": float(held[~sure].mean()) if (~sure).any() else None,
        "set_size": float(sizes.mean()),
        "set_size_not_confident": float(sizes[~sure].mean()) if (~sure).any() else None,
    }


def non_digit_row(run, name: str, images: np.ndarray) -> dict:
    _, said = judged(run, images)
    return {
        "set": name,
        "images": len(images),
        "flagged": float(np.mean([row["confident"] is False for row in said])),
        "not_a_digit": float(np.mean([row["reason"] == "not a digit" for row in said])),
    }


def measure(run, samples: int, keep: bool, families: dict[str, np.ndarray]) -> dict:
    seconds = None
    if not keep:
        started = time.perf_counter()
        calibrate_run(run)
        seconds = time.perf_counter() - started
        run = load_run(run.path)
    _, (x_test, y_test) = load_dataset(run.dataset.name)
    pool = held_out(len(y_test))
    index = np.sort(np.random.default_rng(0).choice(pool, min(samples, len(pool)), False))
    images, labels = x_test[index], y_test[index]
    rows = [digit_row(run, "clean", images, labels)]
    for name in CORRUPTIONS:
        rows.append(digit_row(run, name, corrupt(images, name, seed=0, index=index), labels))
    shifted = outliers.shifted(images, np.random.default_rng(SHIFT_SEED))
    for k, shift in enumerate(outliers.SHIFTS):
        every = slice(k, None, len(outliers.SHIFTS))
        rows.append(digit_row(run, f"shift: {shift}", shifted[every], labels[every]))
    rows.append(digit_row(run, "typeset (DejaVu)", *ood.typeset_digits()))
    others = [non_digit_row(run, name, batch) for name, batch in families.items()]
    flagged = sum(row["flagged"] * row["images"] for row in others)
    total = sum(row["images"] for row in others)
    others.append({"set": "all non-digits", "images": total, "flagged": flagged / total})
    corrupted = [row for row in rows if row["set"] in CORRUPTIONS]
    return {
        "run": run.name,
        "preset": run.spec.name,
        "test_accuracy": run.metrics.test_accuracy,
        "calibrate_seconds": seconds,
        "thresholds": run.thresholds,
        "digits": rows,
        "non_digits": others,
        "mnist_c_mean_accuracy": float(np.mean([row["accuracy"] for row in corrupted])),
        "mnist_c_meeting_98": sum(
            (row["selective_accuracy"] or 1) >= 0.98 for row in corrupted
        ),  # a corruption with nothing confident can't be wrong
    }


def percent(value) -> str:
    return "–" if value is None else f"{value:.1%}"


def print_tables(result: dict) -> None:
    seconds = result["calibrate_seconds"]
    took = "" if seconds is None else f", calibrated in {seconds:.1f} s"
    print(f"\n### {result['preset']} ({result['run']}{took})\n")
    columns = ["digits", "n", "accuracy", "confident", "selective accuracy", "correct flagged"]
    columns += ["set coverage", "not confident: set coverage", "set size", "not confident: size"]
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in result["digits"]:
        size = row["set_size_not_confident"]
        print(
            f"| {row['set']} | {row['digits']} | {percent(row['accuracy'])} "
            f"| {percent(row['confident'])} | {percent(row['selective_accuracy'])} "
            f"| {percent(row['correct_flagged'])} | {percent(row['set_coverage'])} "
            f"| {percent(row['set_coverage_not_confident'])} | {row['set_size']:.2f} "
            f"| {'–' if size is None else f'{size:.2f}'} |"
        )
    print("\n| non-digits | n | flagged | called not a digit |\n|---|---|---|---|")
    for row in result["non_digits"]:
        flagged, called = percent(row["flagged"]), percent(row.get("not_a_digit"))
        print(f"| {row['set']} | {row['images']} | {flagged} | {called} |")
    print(
        f"\nMNIST-C: mean accuracy {result['mnist_c_mean_accuracy']:.1%}; selective accuracy "
        f"≥ 98% on {result['mnist_c_meeting_98']} of {len(CORRUPTIONS)} corruptions"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", help="run folders to measure")
    parser.add_argument("--train", action="append", default=[], help="PRESET or PRESET:EPOCHS")
    parser.add_argument("--samples", type=int, default=5000, help="held-out digits per set")
    parser.add_argument("--keep", action="store_true", help="measure the stored calibration")
    parser.add_argument("--json-out", help="also write the results here")
    args = parser.parse_args()

    runs = measured_runs(args.runs, args.train, "bench-verdict-")
    families = ood.generate(200)
    results = []
    for run in runs:
        results.append(measure(run, args.samples, args.keep, families))
        print_tables(results[-1])
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
