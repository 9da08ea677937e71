"""Benchmark `digitlab tune`: trials per minute with 1 and 2 workers, and the best validation
accuracy a time budget buys, next to the `mlp` preset's.

Throughput: the same trials (drawn once from the default space by a seeded random sampler and
enqueued) run with 1 worker, then with 2, without pruning and without the on-disk XLA cache,
so the two figures differ only in the workers. The clock includes starting the worker
processes, as a user waits for them.

Budget: a fresh study with the defaults (`digitlab tune --timeout 30m --workers 2`), then the
best trial saved as a run; the `mlp` preset (or `--baseline PRESET`) is trained on the same
split (the last 10% of the training set held out) for its validation and test accuracy.

    python benchmarks/bench_tune.py                        # both parts: ~45 min on 2 cores
    python benchmarks/bench_tune.py --part throughput --trials 6 --epochs 1 --train-samples 20000
    python benchmarks/bench_tune.py --part budget --budget 5m --train-samples 20000
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def throughput(workers: int, args, runs_dir: Path) -> dict:
    """Trials per minute for `workers` processes on the same enqueued trials."""
    import optuna

    from digitlab.config import TrainConfig
    from digitlab.search_space import SearchSpace, spec_for_trial
    from digitlab.tune import tune
    from digitlab.tune.storages import open_storage

    space = SearchSpace(epochs=args.epochs)
    study = optuna.create_study(
        study_name=f"throughput-{workers}",
        storage=open_storage(None, runs_dir),
        direction="maximize",
        sampler=optuna.samplers.RandomSampler(seed=args.seed),
    )
    draws = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=args.seed))
    for _ in range(args.trials):  # the same params for every worker count
        trial = draws.ask()
        spec_for_trial(trial, space, TrainConfig())  # draws every parameter of the space
        study.enqueue_trial(trial.params)
    start = time.perf_counter()
    result = tune(
        f"throughput-{workers}",
        space=space,
        trials=args.trials,
        workers=workers,
        train_samples=args.train_samples,
        pruner="none",
        save_best=False,
        runs_dir=runs_dir,
    )
    minutes = (time.perf_counter() - start) / 60
    return {
        "workers": workers,
        "trials": result.new_trials,
        "minutes": round(minutes, 2),
        "trials_per_minute": round(result.new_trials / minutes, 2),
        "best_val_accuracy": round(result.best.value, 4),
    }


def budget(args, runs_dir: Path) -> dict:
    """Best validation accuracy within the budget, and the baseline preset's on the same split."""
    from digitlab.config import with_overrides
    from digitlab.errors import SpecError
    from digitlab.presets import get_preset
    from digitlab.training import train
    from digitlab.tune import parse_duration, tune

    start = time.perf_counter()
    result = tune(
        "budget",
        trials=None,
        timeout=parse_duration(args.budget),
        workers=args.workers,
        train_samples=args.train_samples,
        seed=args.seed,
        runs_dir=runs_dir,
    )
    out = {
        "budget": args.budget,
        "workers": args.workers,
        "wall_minutes": round((time.perf_counter() - start) / 60, 1),
        "trials": result.counts,
        "best_trial": result.best.number,
        "best_params": result.best.params,
        "best_val_accuracy": round(result.best.value, 4),
        "best_test_accuracy": round(result.run.metrics.test_accuracy, 4),
    }
    try:
        spec = with_overrides(
            get_preset(args.baseline), validation_split=0.1, train_samples=args.train_samples
        )
    except SpecError as exc:
        out["baseline"] = f"{args.baseline} not measured: {exc}"
        return out
    run = train(spec, runs_dir=runs_dir, name=args.baseline, verbose=0)
    out["baseline"] = {
        "preset": args.baseline,
        "epochs": run.epochs_done,
        "train_seconds": run.metrics.train_seconds,
        "val_accuracy": round(run.history["val_accuracy"][-1], 4),
        "test_accuracy": round(run.metrics.test_accuracy, 4),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("throughput", "budget", "both"), default="both")
    parser.add_argument("--trials", type=int, default=8, help="throughput: trials per run")
    parser.add_argument("--epochs", type=int, default=1, help="throughput: epochs per trial")
    parser.add_argument("--budget", default="30m", help="budget: tuning time, e.g. 30m")
    parser.add_argument("--workers", type=int, default=2, help="budget: worker processes")
    parser.add_argument("--baseline", default="mlp", help="budget: the preset to compare with")
    parser.add_argument("--train-samples", type=int, default=None, help="default: all 60,000")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs-dir", type=Path, default=None, help="default: a temp folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--xla-cache", action="store_true", help="keep fastfit's compilation cache on disk"
    )
    args = parser.parse_args()
    if not args.xla_cache:
        # Off by default: the 2-worker run would reuse the 1-worker run's compiled programs;
        # a real search draws new networks (new units) all the time and compiles each.
        os.environ["DIGITLAB_XLA_CACHE"] = "0"  # spawned workers inherit it
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="bench-tune-"))
    figures: dict = {"runs_dir": str(runs_dir), "train_samples": args.train_samples}
    if args.part in ("throughput", "both"):
        figures["throughput"] = [throughput(n, args, runs_dir) for n in (1, 2)]
        for row in figures["throughput"]:
            print(
                f"{row['workers']} worker(s): {row['trials']} trials of {args.epochs} epoch(s) "
                f"in {row['minutes']} min = {row['trials_per_minute']} trials/min"
            )
    if args.part in ("budget", "both"):
        figures["budget"] = budget(args, runs_dir)
        b = figures["budget"]
        print(
            f"tune, {b['budget']} budget, {b['workers']} workers: best validation accuracy "
            f"{b['best_val_accuracy']:.2%} (trial {b['best_trial']}), test "
            f"{b['best_test_accuracy']:.2%}; trials {b['trials']}"
        )
        base = b["baseline"]
        if isinstance(base, dict):
            print(
                f"{base['preset']} preset: validation accuracy {base['val_accuracy']:.2%}, "
                f"test {base['test_accuracy']:.2%} after {base['epochs']} epochs"
            )
        else:
            print(base)
    print(json.dumps(figures, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str) + "\n")


if __name__ == "__main__":  # worker processes are spawned: they import this file
    main()
