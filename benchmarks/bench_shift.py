"""MNIST-C benchmark (issue 22, item 1): every preset's accuracy and verdict under shift.

For each run given (or each preset trained here with `--train PRESET[:EPOCHS]`), runs
`digitlab.robustness.measure_robustness` exactly as `digitlab robustness RUN` does: held-out
test digits (the second half of the test split: calibration took the first), clean and
under each of MNIST-C's 15 corruptions, through the run's stored verdict. Prints, in
Markdown for benchmarks/RESULTS.md:

1. a summary row per run: clean accuracy and selective accuracy, the mean accuracy over the
   corruptions, the confident share and selective accuracy of all corrupted digits pooled,
   the mean AURC, and the seconds it took;
2. per run, the table `digitlab robustness` prints (accuracy, confident, selective accuracy
   with counts, AURC per corruption).

The results are also saved into each run (robustness.json, robustness.png), as the command
does.

    .venv/bin/python benchmarks/bench_shift.py runs/20261203-111043-seed runs/...-mlp
    .venv/bin/python benchmarks/bench_shift.py --train seed --train fast --samples 5000
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")

from measured_runs import measured_runs

from digitlab.robustness import (
    DEFAULT_SAMPLES,
    HEADERS,
    measure_robustness,
    save_robustness,
    table_rows,
)


def summary(data: dict, run) -> str:
    """One Markdown row: the run's headline figures under shift."""
    clean, pooled = data["rows"][0], data["pooled"]

    def share(value):
        return "–" if value is None else f"{value:.2%}"

    cells = [
        run.spec.name,
        str(run.epochs_done),
        f"{data['digits']:,}",
        share(clean["accuracy"]),
        share(clean["selective_accuracy"]),
        share(pooled["accuracy"]),
        share(pooled["confident_share"]),
        share(pooled["selective_accuracy"]),
        f"{clean['aurc']:.4f} / {pooled['aurc']:.4f}",
        f"{data['seconds']:.0f} s",
    ]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", help="run folders to measure")
    parser.add_argument("--train", action="append", default=[], help="PRESET or PRESET:EPOCHS")
    parser.add_argument("--samples", type=int, default=DEFAULT_SAMPLES, help="held-out digits")
    parser.add_argument("--seed", type=int, default=0, help="digits and corruption draws")
    parser.add_argument("--json-out", help="also write every run's results here")
    args = parser.parse_args()

    runs = measured_runs(args.runs, args.train, "bench-shift-")

    results = []
    for run in runs:
        result = save_robustness(run, measure_robustness(run, samples=args.samples, seed=args.seed))
        results.append((run, result.to_dict()))
        print(f"measured {run.path} in {result.seconds:.1f} s", flush=True)

    print(
        "\n| preset | epochs | digits | clean accuracy | clean selective | accuracy under "
        "corruption (mean of 15) | confident under corruption | selective accuracy under "
        "corruption | AURC clean / corrupted (mean) | time |"
    )
    print("|" + "---|" * 10)
    for run, data in results:
        print(summary(data, run))
    for run, data in results:
        print(
            f"\n**{run.spec.name}** ({run.name}, {data['digits']:,} digits, seed {data['seed']})\n"
        )
        print("| " + " | ".join(HEADERS) + " |")
        print("|---|" + "---:|" * (len(HEADERS) - 1))
        for row in table_rows(data):
            print("| " + " | ".join(row) + " |")
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump({str(run.path): data for run, data in results}, out, indent=2)


if __name__ == "__main__":
    main()
