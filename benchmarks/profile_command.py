"""Where a `digitlab` command spends its time outside training (issue 14, fixed cost).

Runs `digitlab train --preset seed` (by default) in fresh processes: first `--repeats` times
plainly, for the wall time, then once more under cProfile (`-o`, read back with pstats) for
the breakdown by phase. Also times `digitlab --help` and `digitlab data info` (target ≤ 0.5 s).
Every run after the first finds warm caches (the dataset, JAX's compilation cache on disk).
Reported: medians (min–max) of the wall seconds, the run's own `train_seconds`, and their
ratio (target ≤ 1.4); then the profiled phases, cumulative seconds; then the same phases
timed without a profiler (cProfile doubles Python-bound code such as matplotlib's), wall and
CPU seconds (user + system: on a shared machine, closer to what an idle one takes), by
wrapping each phase's function in the process (`TIMER`).

    .venv/bin/python benchmarks/profile_command.py --repeats 3 [--preset seed] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIGITLAB = str(Path(sys.executable).with_name("digitlab"))
# Python's bytecode cache on, as in a user's shell (a sandbox's PYTHONDONTWRITEBYTECODE=1
# recompiles digitlab's own modules in every process)
USER_ENV = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}

# (label, the function's file (its path's end), the function's name), in the order they run;
# the outermost call of each (the largest cumulative time) is reported
PHASES = [
    ("import digitlab.training (keras, jax)", "digitlab/training.py", "<module>"),
    ("load the dataset", "digitlab/data/sources.py", "load_dataset_files"),
    ("build_model", "digitlab/model.py", "build_model"),
    ("fit (compile + epochs)", "digitlab/training.py", "_fit"),
    ("_save_run (all below)", "digitlab/training.py", "_save_run"),
    ("  model.save", "keras/src/saving/saving_api.py", "save_model"),
    ("  evaluate_model", "digitlab/evaluation.py", "evaluate_model"),
    ("  write_pictures", "digitlab/evaluation.py", "write_pictures"),
    ("  calibration", "digitlab/training.py", "_calibrated"),
    ("  TensorBoard events.write", "digitlab/events.py", "write"),
    ("  write_run_report", "digitlab/report/pages.py", "write_run_report"),
    ("XLA compiles (backend_compile_and_load)", "jax/_src/compiler.py", "backend_compile_and_load"),
    ("persistent cache reads", "jax/_src/compiler.py", "_cache_read"),
]


# (label, module, attribute) of the functions `TIMER` wraps, as `digitlab.training` calls them
TIMED = [
    ("load the dataset", "digitlab.training", "load_dataset_files"),
    ("build_model", "digitlab.training", "build_model"),
    ("fit (compile + epochs)", "digitlab.training", "_fit"),
    ("_save_run (all below)", "digitlab.training", "_save_run"),
    ("  write_run_files (model.save, ...)", "digitlab.training", "write_run_files"),
    ("  evaluate_model", "digitlab.training", "evaluate_model"),
    ("  write_pictures", "digitlab.training", "write_pictures"),
    ("  calibration", "digitlab.training", "_calibrated"),
    ("  TensorBoard events.write", "digitlab.events", "EpochEvents.write"),
    ("  write_run_report", "digitlab.training", "write_run_report"),
]
# Runs `digitlab ARGS...` in this process with each TIMED function wrapped; prints the phases
# (label, wall s, CPU s, calls) as JSON on stderr's last line.
TIMER = """
import functools, importlib, json, sys, time
start = time.perf_counter(), time.process_time()
totals = {}
def timed(label, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            row = totals.setdefault(label, [0.0, 0.0, 0])
            row[0] += time.perf_counter() - wall
            row[1] += time.process_time() - cpu
            row[2] += 1
    return wrapper
def clock(label, module):
    wall, cpu = time.perf_counter(), time.process_time()
    importlib.import_module(module)
    totals[label] = [time.perf_counter() - wall, time.process_time() - cpu, 1]
clock("import digitlab.cli", "digitlab.cli")
clock("import digitlab.training (keras, jax)", "digitlab.training")
for label, module, attribute in json.loads(sys.argv[1]):
    owner = importlib.import_module(module)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    setattr(owner, name, timed(label, getattr(owner, name)))
from digitlab.cli import app  # not `main`, whose exit would skip the report below
sys.argv = ["digitlab", *sys.argv[2:]]
try:
    app()
except SystemExit:
    pass
totals["whole process (after Python's start)"] = [
    time.perf_counter() - start[0], time.process_time() - start[1], 1
]
print(json.dumps([[label, *row] for label, row in totals.items()]), file=sys.stderr)
"""


def _wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=USER_ENV, cwd=ROOT)
    return time.perf_counter() - start


def _train_seconds(runs_dir: Path) -> float:
    (metrics,) = runs_dir.glob("*/metrics.json")
    return json.loads(metrics.read_text())["train_seconds"]


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _phases(profile: Path) -> list[tuple[str, float, int]]:
    stats = pstats.Stats(str(profile)).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    found = []
    for label, suffix, function in PHASES:
        rows = [
            (ct, nc)
            for (file, _, name), (_, nc, _, ct, _) in stats.items()
            if file.endswith(suffix) and name == function
        ]
        found.append((label, max((ct for ct, _ in rows), default=0.0), sum(n for _, n in rows)))
    total = max(ct for _, _, _, ct, _ in stats.values())
    return [("whole process, profiled", total, 1), *found]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--preset", default="seed")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result: dict[str, object] = {"preset": args.preset}
    with tempfile.TemporaryDirectory() as tmp:
        train = [DIGITLAB, "train", "--preset", args.preset]
        subprocess.run(
            [*train, "--runs-dir", f"{tmp}/warmup"], check=True, capture_output=True, env=USER_ENV
        )
        walls, trains = [], []
        for i in range(args.repeats):
            runs = Path(tmp) / f"run{i}"
            walls.append(_wall([*train, "--runs-dir", str(runs)]))
            trains.append(_train_seconds(runs))
        result["wall_s"] = _summary(walls)
        result["train_s"] = _summary(trains)
        result["ratio"] = _summary([w / t for w, t in zip(walls, trains, strict=True)])
        profile = Path(tmp) / "train.prof"
        runs = Path(tmp) / "profiled"
        cprofile = [sys.executable, "-m", "cProfile", "-o", str(profile)]
        subprocess.run(
            [*cprofile, *train, "--runs-dir", str(runs)],
            check=True,
            capture_output=True,
            env=USER_ENV,
        )
        result["profiled_train_s"] = _train_seconds(runs)
        result["phases"] = _phases(profile)
        runs = Path(tmp) / "timed"
        timer = [sys.executable, "-c", TIMER, json.dumps(TIMED)]
        out = subprocess.run(
            [*timer, *train[1:], "--runs-dir", str(runs)],
            capture_output=True,
            env=USER_ENV,
            text=True,
        )
        result["timed_train_s"] = _train_seconds(runs)
        result["timed_phases"] = json.loads(out.stderr.strip().splitlines()[-1])
    result["help_s"] = _summary([_wall([DIGITLAB, "--help"]) for _ in range(args.repeats)])
    result["data_info_s"] = _summary(
        [_wall([DIGITLAB, "data", "info"]) for _ in range(args.repeats)]
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return

    def line(name: str, s: dict[str, float]) -> str:
        return f"{name:<28} {s['median']:7.2f}  ({s['min']:.2f}–{s['max']:.2f})"

    print(f"digitlab train --preset {args.preset}, {args.repeats} warm repeats, median (min–max)")
    print(line("whole process, s", result["wall_s"]))
    print(line("train_seconds, s", result["train_s"]))
    print(line("ratio (target ≤ 1.4)", result["ratio"]))
    print(line("digitlab --help, s", result["help_s"]))
    print(line("digitlab data info, s", result["data_info_s"]))
    print(f"\nprofiled run (cProfile adds overhead; train_seconds {result['profiled_train_s']}):")
    for label, seconds, calls in result["phases"]:
        print(f"  {label:<44} {seconds:6.2f} s  ({calls} calls)")
    print(f"\nunprofiled run (train_seconds {result['timed_train_s']}), wall and CPU s:")
    for label, wall, cpu, calls in result["timed_phases"]:
        print(f"  {label:<44} {wall:6.2f}  {cpu:6.2f}  ({calls} calls)")


if __name__ == "__main__":
    main()
