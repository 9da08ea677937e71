"""Out-of-distribution benchmark (issue 12): how many non-digits does a run flag?

For each run given (or each preset trained here with `--train PRESET[:EPOCHS]`):

1. calibrate it exactly as training does (`digitlab.confidence.calibrate_run`: the first
   half of the test split);
2. generate the non-digit families offline (`digitlab.ood.generate`: typeset capitals in
   every installed DejaVu font, random scribbles, uniform noise, circles/squares/crosses);
3. apply the one verdict (`digitlab.confidence.verdicts`, as the CLI, the API and the page
   do) to them and to the held-out real test digits (the second half of the test split,
   `digitlab.robustness.held_out`), and print the fraction flagged per family, the fraction
   of correctly classified real digits flagged, and of misclassified ones.

Goal (issue 12): >= 80 % of non-digits flagged, <= 2 % of correct real digits flagged.

    .venv/bin/python benchmarks/bench_ood.py runs/20261202-090721-seed
    .venv/bin/python benchmarks/bench_ood.py --train seed --train mlp --train cnn:4
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
from measured_runs import measured_runs

from digitlab import ood
from digitlab.confidence import calibrate_run, verdicts
from digitlab.data import load_dataset
from digitlab.robustness import held_out
from digitlab.runs import load_run


def flagged(run, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
    probabilities = run.predict_proba(images)
    rows = verdicts(run, images, probabilities)
    return probabilities, np.array([not r["confident"] for r in rows]), [r["reason"] for r in rows]


def measure(run, families: dict[str, np.ndarray]) -> dict:
    thresholds = calibrate_run(run)
    run = load_run(run.path)
    _, (x_test, y_test) = load_dataset(run.dataset.name)
    rest = held_out(len(y_test))  # calibrated on the first half: measure the rest
    x_test, y_test = x_test[rest], y_test[rest]
    probabilities, flags, _ = flagged(run, x_test)
    correct = probabilities.argmax(axis=1) == y_test
    result = {
        "run": run.name,
        "preset": run.spec.name,
        "epochs": run.epochs_done,
        "test_accuracy": run.metrics.test_accuracy,
        "thresholds": thresholds,
        "real_correct_flagged": float(flags[correct].mean()),
        "real_wrong_flagged": float(flags[~correct].mean()),
        "real_digits": len(y_test),
    }
    every = []
    for family, images in families.items():
        _, flags, reasons = flagged(run, images)
        every.append(flags)
        result[family] = float(flags.mean())
        result[f"{family}_not_a_digit"] = float(np.mean([r == "not a digit" for r in reasons]))
        result[f"{family}_count"] = len(images)
    result["all_non_digits"] = float(np.concatenate(every).mean())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", help="run folders to measure")
    parser.add_argument("--train", action="append", default=[], help="PRESET or PRESET:EPOCHS")
    parser.add_argument("--n", type=int, default=200, help="images per generated family")
    parser.add_argument("--json-out", help="also write the results here")
    args = parser.parse_args()

    runs = measured_runs(args.runs, args.train, "bench-ood-")
    families = ood.generate(args.n)
    results = [measure(run, families) for run in runs]
    cols = ["letters", "scribbles", "noise", "shapes", "all_non_digits"]
    print("| preset | epochs | test acc | " + " | ".join(cols) + " | correct real flagged |")
    for r in results:
        cells = " | ".join(f"{r[c]:.1%}" for c in cols)
        print(
            f"| {r['preset']} | {r['epochs']} | {r['test_accuracy']:.2%} | {cells} "
            f"| {r['real_correct_flagged']:.2%} |"
        )
    print(json.dumps(results, indent=2))
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
