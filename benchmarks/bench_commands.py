"""The fixed cost of each command a learner types (issue 23, "instant commands").

Trains one small seed run in a temporary runs folder, then times whole `digitlab` processes,
each once untimed (warm caches: the dataset, JAX's compilation cache, the OS's file cache)
and then `--repeats` times: `predict RUN --index 0`, `predict RUN my.png` (a drawn 3),
`evaluate RUN --json`, `summary`, `runs`, `explain RUN --index 0`, the time from starting
`serve RUN` to a 200 from `/health`, and `train --preset seed` as a whole process divided by
its own `train_seconds` (metrics.json). Then what remains of each command (`--profile`, by
default all but `runs`): its slowest imports (`python -X importtime`) and its cProfile top
entries.

Targets (issue 23, idle 2-core machine): each command ≤ 1.5 s, /health ≤ 2 s, train ≤ 1.4×.
The load average before and after is printed: on a shared machine it inflates every wall
time, so each command's CPU seconds (user + system) are given too.

    .venv/bin/python benchmarks/bench_commands.py [--repeats 5] [--train-repeats 3] [--json]
        [--commands "explain RUN --index 0" ...] [--no-serve] [--profile COMMAND ...]
        [--before-src /tmp/old/src]
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
DIGITLAB = str(Path(sys.executable).with_name("digitlab"))
TARGETS = {"serve /health": 2.0, "train ÷ train_seconds": 1.4}  # every other row: 1.5 s
MAIN = "import sys; from digitlab.cli import main; sys.argv[0] = 'digitlab'; main()"
COMMANDS = {
    "predict RUN --index 0": ["predict", "RUN", "--index", "0"],
    "predict RUN my.png": ["predict", "RUN", "my.png"],
    "evaluate RUN --json": ["evaluate", "RUN", "--json"],
    "summary": ["summary"],
    "runs": ["runs"],
    "explain RUN --index 0": ["explain", "RUN", "--index", "0"],
}


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def _timed(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one process. On a busy machine the
    CPU seconds are close to what the wall time would be on an idle one, for a process that
    computes on one thread."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = _run(args, cwd, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_seconds(run: str, cwd: Path, env: dict[str, str]) -> float:
    """From starting `digitlab serve` to the first 200 from /health."""
    port = _free_port()
    start = time.perf_counter()
    server = subprocess.Popen(
        [DIGITLAB, "serve", run, "--port", str(port)],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while time.perf_counter() - start < 120:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.02)
            if server.poll() is not None:
                raise RuntimeError("serve exited before answering /health")
        raise RuntimeError("serve did not answer /health within 120 s")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _train_ratio(tmp: Path, env: dict[str, str], extra: list[str]) -> tuple[float, float]:
    """Whole-process seconds of `train --preset seed` and its run's own train_seconds."""
    runs = Path(tempfile.mkdtemp(dir=tmp, prefix="train-"))
    wall = _run([DIGITLAB, "train", "--preset", "seed", "--runs-dir", str(runs), *extra], tmp, env)
    (metrics,) = runs.glob("*/metrics.json")
    return wall, json.loads(metrics.read_text())["train_seconds"]


def _import_times(args: list[str], cwd: Path, env: dict[str, str], top: int) -> list[list]:
    """The packages whose modules took longest to import, each module's own time (-X
    importtime's `self` column) summed by top-level package: digitlab's own modules apart
    from the matplotlib or h5py they import lazily."""
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", MAIN, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )
    packages: dict[str, float] = {}
    for line in out.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \| *(\S+)", line)
        if match:
            name = match.group(2).split(".")[0]
            packages[name] = packages.get(name, 0.0) + int(match.group(1)) / 1e6
    return [[n, round(s, 3)] for n, s in sorted(packages.items(), key=lambda p: -p[1])[:top]]


# Frames every command passes through (the process, the import machinery, Typer and Click
# calling the command): their cumulative time is the whole command's, which says nothing.
WRAPPERS = ("typer/", "_click/", "click/", "cli/app.py", "importlib/")


def _profile(args: list[str], cwd: Path, env: dict[str, str], top: int) -> list[list]:
    """cProfile's top entries by cumulative time, the wrappers around every command and the
    script's own frames left out."""
    profile, script = cwd / "command.prof", cwd / "command.py"
    script.write_text(MAIN + "\n")
    subprocess.run(
        [sys.executable, "-m", "cProfile", "-o", str(profile), str(script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
    )
    stats = pstats.Stats(str(profile)).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    rows = []
    for (file, line, name), (_, calls, _, cumulative, _) in stats.items():
        where = f"{Path(file).parent.name}/{Path(file).name}"
        if file in ("~", str(script)) or file.startswith("<frozen") or where.startswith(WRAPPERS):
            continue
        rows.append([f"{where}:{line}({name})", cumulative, calls])
    rows.sort(key=lambda row: -row[1])
    return [[where, round(seconds, 3), calls] for where, seconds, calls in rows[:top]]


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def _load() -> dict[str, object]:
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()], "uptime": uptime}


def _as_a_user() -> dict[str, str]:
    """This environment, with Python's bytecode cache on as a user's shell has it: a sandbox's
    PYTHONDONTWRITEBYTECODE=1 recompiles digitlab's own modules in every process (0.13 s of
    `summary`'s 0.50 measured here; the warm-up run writes the cache)."""
    return {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}


def _measure(args, tmp: Path, env: dict[str, str]) -> dict[str, object]:
    from images import draw_digit

    draw_digit(3).save(tmp / "my.png")
    runs = tmp / "runs"
    before = {**env, "PYTHONPATH": args.before_src} if args.before_src else None
    train = ["train", "--preset", "seed", "--runs-dir", str(runs), *args.run_options.split()]
    # the older tree trains the run when there is one: the newer reads older runs
    subprocess.run([DIGITLAB, *train], cwd=tmp, env=before or env, check=True, capture_output=True)
    (run,) = (p.name for p in runs.iterdir() if (p / "model.keras").exists())
    env = {**env, "DIGITLAB_RUNS_DIR": str(runs)}
    trees = {"": env}
    if before:
        trees[" (before)"] = {**before, "DIGITLAB_RUNS_DIR": str(runs)}
    rows: dict[str, dict[str, float]] = {}
    for label in args.commands:
        command = COMMANDS[label]
        argv = [DIGITLAB, *(run if a == "RUN" else a for a in command)]
        times: dict[str, list[tuple[float, float]]] = {tree: [] for tree in trees}
        for tree_env in trees.values():
            _run(argv, tmp, tree_env)  # warm-up, untimed
        for _ in range(args.repeats):  # the trees in turn: both see the same load
            for tree, tree_env in trees.items():
                times[tree].append(_timed(argv, tmp, tree_env))
        for tree, pairs in times.items():
            walls, cpus = zip(*pairs, strict=True)
            rows[label + tree], rows[f"{label}{tree}, CPU s"] = _summary(walls), _summary(cpus)
            print(label + tree, rows[label + tree], cpus, file=sys.stderr, flush=True)
    if args.serve:
        _serve_seconds(run, tmp, env)
        seconds = [_serve_seconds(run, tmp, env) for _ in range(args.repeats)]
        rows["serve /health"] = _summary(seconds)
        print("serve /health", rows["serve /health"], file=sys.stderr, flush=True)
    if args.train_repeats:  # 0: leave train out (a change that doesn't touch training)
        extra = args.train_options.split()
        _train_ratio(tmp, env, extra)
        trains = [_train_ratio(tmp, env, extra) for _ in range(args.train_repeats)]
        rows["train ÷ train_seconds"] = _summary([wall / seconds for wall, seconds in trains])
        rows["train whole process, s"] = _summary([wall for wall, _ in trains])
    profiles = {}
    for label in args.profile:
        argv = [run if a == "RUN" else a for a in COMMANDS[label]]
        profiles[label] = {
            "imports_s": _import_times(argv, tmp, env, args.top),
            "profile_s": _profile(argv, tmp, env, args.top),
        }
    return {"rows": rows, "profiles": profiles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-repeats", type=int, default=3)
    parser.add_argument(
        "--run-options",
        default="--train-samples 6000 --epochs 2",
        help="train options for the run the commands use",
    )
    parser.add_argument(
        "--train-options", default="", help="options of the timed `train --preset seed`"
    )
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--commands",
        nargs="*",
        choices=list(COMMANDS),
        default=list(COMMANDS),
        metavar="COMMAND",
        help="the commands (their labels, quoted) to time [default: all]",
    )
    parser.add_argument("--no-serve", dest="serve", action="store_false", help="leave serve out")
    parser.add_argument(
        "--before-src",
        metavar="SRC",
        help="also time the commands with PYTHONPATH=SRC (an older tree's src, e.g. from "
        "`git archive`), in turn with this one's: on a shared machine both see the same load",
    )
    parser.add_argument(
        "--profile",
        nargs="*",
        choices=list(COMMANDS),
        default=[label for label in COMMANDS if label != "runs"],
        metavar="COMMAND",
        help="the commands (their labels, quoted) to profile after timing them",
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON")
    args = parser.parse_args()
    before = _load()
    with tempfile.TemporaryDirectory() as tmp:
        result = _measure(args, Path(tmp), _as_a_user())
    result = {
        "load_before": before,
        "load_after": _load(),
        "repeats": args.repeats,
        "train_repeats": args.train_repeats,
        "run_options": args.run_options,
        "train_options": args.train_options,
        "src": os.environ.get("PYTHONPATH", "(installed digitlab)"),
        **result,
    }
    if not args.json:
        _print_table(result)
    print(json.dumps(result, indent=2))


def _print_table(result: dict) -> None:
    print(f"load before: {result['load_before']['uptime']}")
    print(f"load after:  {result['load_after']['uptime']}")
    print(f"\n| command | median s (min–max), {result['repeats']} warm runs | target | met |")
    print("|---|---|---|---|")
    for label, s in result["rows"].items():
        plain = not label.startswith("train whole") and not label.endswith(("CPU s", "(before)"))
        target = TARGETS.get(label, 1.5 if plain else None)
        met = "" if target is None else ("yes" if s["median"] <= target else "**no**")
        shown = "" if target is None else f"≤ {target}"
        print(f"| {label} | {s['median']} ({s['min']}–{s['max']}) | {shown} | {met} |")
    for label, profile in result["profiles"].items():
        print(f"\n{label}, slowest imports (s, each module's own, by package):")
        for name, seconds in profile["imports_s"]:
            print(f"  {name:<30} {seconds:6.3f}")
        print(f"\n{label}, cProfile top entries (cumulative s, calls):")
        for where, seconds, calls in profile["profile_s"]:
            print(f"  {seconds:7.3f}  {calls:>7}  {where}")
    print()


if __name__ == "__main__":
    main()
