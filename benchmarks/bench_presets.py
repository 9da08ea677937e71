"""The accuracy presets: train a preset from several seeds, one after another, and report the
test accuracy and training time of each and their mean (issue 3's accuracy table).

Each seed is `digitlab train --preset PRESET --seed S` in its own process, as a user runs it;
the figures are read back from the run directories.

    .venv/bin/python benchmarks/bench_presets.py --preset cnn --seeds 0 1 2
    .venv/bin/python benchmarks/bench_presets.py --preset mlp-aug --json out/mlp-aug.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from digitlab.runs import load_run


def load_average() -> float:
    return os.getloadavg()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs-dir", type=Path, default=None, help="default: a temp folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix=f"bench-{args.preset}-"))
    rows = []
    for seed in args.seeds:
        name = f"{args.preset}-seed{seed}"
        before = load_average()
        command = [sys.executable, "-m", "digitlab", "train", "--preset", args.preset,
                   "--seed", str(seed), "--name", name, "--runs-dir", str(runs_dir)]  # fmt: skip
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        run = load_run(sorted(runs_dir.glob(f"*-{name}"))[-1])
        rows.append({
            "seed": seed,
            "test_accuracy": run.metrics.test_accuracy,
            "train_minutes": run.metrics.train_seconds / 60,
            "epochs": run.metrics.epochs,
            "load_before": before,
            "load_after": load_average(),
            "run": str(run.path),
        })  # fmt: skip
        row = rows[-1]
        print(f"seed {seed}: {row['test_accuracy']:.2%} in {row['train_minutes']:.1f} min of "
              f"training (load {before:.1f} → {row['load_after']:.1f})", flush=True)  # fmt: skip
    accuracies = [row["test_accuracy"] for row in rows]
    minutes = [row["train_minutes"] for row in rows]
    summary = {
        "preset": args.preset,
        "mean_test_accuracy": statistics.mean(accuracies),
        "max_train_minutes": max(minutes),
        "seeds": rows,
    }
    print(f"{args.preset}: mean {summary['mean_test_accuracy']:.2%} over seeds {args.seeds}; "
          f"{min(minutes):.1f}–{max(minutes):.1f} min of training each")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
