"""`make bench`: the notebook's network trained four ways, side by side, into RESULTS.md.

1. the notebook as written, on tf.keras with TensorFlow (benchmarks/.venv-tf, tensorflow-cpu);
2. the same network, Keras 3 on JAX, `model.fit` with default compile arguments;
3. a plain PyTorch loop (benchmarks/.venv-torch, CPU torch);
4. `digitlab train --preset seed`, the whole command.
A fifth line, `digitlab.fastfit` alone in a process, separates the loop from the command.

Each runs in its own process, `--repeats` times (default 5), alternating between them; the
same MNIST arrays feed all (an .npz that digitlab writes from its verified cache). For each:
steady-state seconds per epoch (median of epochs 3–10), the process's wall time, its peak RSS
(from wait4) and the test accuracy; then median and spread, and the ratios of (4) to the others.
The virtualenvs are created on first use; a contender whose install fails is reported, not fatal.

    .venv/bin/python benchmarks/run_all.py [--repeats 5] [--only digitlab,keras-jax]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
OUT = BENCH / "out"
MAIN_PYTHON = ROOT / ".venv" / "bin" / "python"
RESULTS = BENCH / "RESULTS.md"

VENVS = {  # name: what pip installs into benchmarks/.venv-<name>
    "tf": ["tensorflow-cpu"],
    "torch": ["torch==2.13.0", "numpy"],  # 2.13.0: the local CPU wheel, not a CUDA download
}


def venv_python(name: str) -> Path:
    return BENCH / f".venv-{name}" / "bin" / "python"


def ensure_venv(name: str) -> str | None:
    """Create benchmarks/.venv-<name> if missing; returns an error message or None."""
    python = venv_python(name)
    stamp = python.parent.parent / ".installed"
    if stamp.exists():
        return None
    try:
        subprocess.run([sys.executable, "-m", "venv", str(python.parent.parent)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *VENVS[name]], check=True)
    except subprocess.CalledProcessError as exc:
        return f"installing {' '.join(VENVS[name])} failed: {exc}"
    stamp.touch()
    return None


def export_mnist() -> Path:
    """MNIST as one .npz, from digitlab's verified cache: the same arrays for every contender."""
    path = OUT / "mnist.npz"
    if not path.exists():
        OUT.mkdir(parents=True, exist_ok=True)
        code = (
            "import numpy as np, sys; from digitlab.data import load_dataset; "
            "(a, b), (c, d) = load_dataset('mnist'); "
            "np.savez(sys.argv[1], x_train=a, y_train=b, x_test=c, y_test=d)"
        )
        subprocess.run([str(MAIN_PYTHON), "-c", code, str(path)], check=True)
    return path


def contenders(data: Path) -> dict[str, dict]:
    runs_dir = OUT / "runs"
    digitlab = ROOT / ".venv" / "bin" / "digitlab"
    return {
        "notebook-tf": {
            "venv": "tf",
            "command": [venv_python("tf"), BENCH / "bench_notebook_tf.py", "--data", data],
        },
        "keras-jax": {
            "command": [MAIN_PYTHON, BENCH / "bench_fastfit.py", "--loop", "fit", "--data", data],
        },
        "torch": {
            "venv": "torch",
            "command": [venv_python("torch"), BENCH / "bench_torch.py", "--data", data],
        },
        "digitlab": {
            "command": [digitlab, "train", "--preset", "seed", "--runs-dir", runs_dir],
            "runs_dir": runs_dir,
        },
        "fastfit-alone": {
            "command": [MAIN_PYTHON, BENCH / "bench_fastfit.py", "--data", data],
        },
    }


def wall_and_peak_rss(command: list, env: dict) -> tuple[float, float, str]:
    """Run `command`; its wall seconds, peak RSS in MB (from wait4) and stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen([str(c) for c in command], stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(process.pid, 0)  # reaps it: Popen must not wait again
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode:
            raise RuntimeError(f"{command[1]} failed: {err.read().decode()[-2000:]}")
        return wall, usage.ru_maxrss / 1024, out.read().decode()


def run_once(name: str, spec: dict, seed: int) -> dict:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = list(spec["command"])
    if name != "notebook-tf":  # the notebook has no seed, as written
        command += ["--seed", str(seed)]
    wall, peak, stdout = wall_and_peak_rss(command, env)
    if name == "digitlab":
        runs = sorted(Path(spec["runs_dir"]).glob("*-seed*"), key=lambda p: p.stat().st_mtime)
        metrics = json.loads((runs[-1] / "metrics.json").read_text())
        epochs = metrics["epoch_seconds"]
        result = {
            "epoch_seconds": epochs,
            "steady_epoch_s": statistics.median(epochs[2:]),
            "test_accuracy": metrics["test_accuracy"],
        }
    else:
        result = json.loads(stdout.strip().splitlines()[-1])
    result.update({"wall_s": wall, "peak_rss_mb": peak, "seed": seed, "load": os.getloadavg()})
    return result


def summary(values: list[float]) -> str:
    if not values:
        return "–"

    def fmt(v: float) -> str:
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"

    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def machine() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory": f"{memory:.0f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    code = (
        "import digitlab, keras, jax, numpy; "
        "print(f'digitlab {digitlab.__version__}, keras {keras.__version__}, "
        "jax {jax.__version__}, numpy {numpy.__version__}')"
    )
    out = {"main": subprocess.run([str(MAIN_PYTHON), "-c", code], capture_output=True, text=True)}
    for name, module in (("tf", "tensorflow"), ("torch", "torch")):
        if venv_python(name).exists():
            code = f"import {module}; print('{module}', {module}.__version__)"
            out[name] = subprocess.run(
                [str(venv_python(name)), "-c", code], capture_output=True, text=True
            )
    return {k: v.stdout.strip() or v.stderr.strip()[-200:] for k, v in out.items()}


def write_results(results: dict[str, list[dict]], errors: dict[str, str], argv: list[str]) -> str:
    rows = []
    for name, runs in results.items():
        rows.append(
            f"| {name} | {summary([r['steady_epoch_s'] for r in runs])} "
            f"| {summary([r['wall_s'] for r in runs])} "
            f"| {summary([r['peak_rss_mb'] for r in runs])} "
            f"| {summary([100 * r['test_accuracy'] for r in runs])} | {len(runs)} |"
        )
    ratios = []
    ours = results.get("digitlab")
    for name, runs in results.items():
        if not ours or name == "digitlab" or not runs:
            continue
        epoch = statistics.median(r["steady_epoch_s"] for r in runs) / statistics.median(
            r["steady_epoch_s"] for r in ours
        )
        wall = statistics.median(r["wall_s"] for r in runs) / statistics.median(
            r["wall_s"] for r in ours
        )
        ratios.append(f"| {name} | {epoch:.2f}× | {wall:.2f}× |")
    loads = [r["load"][0] for runs in results.values() for r in runs]
    lines = [
        "# Benchmarks",
        "",
        f"Measured {datetime.now():%Y-%m-%d %H:%M} with `{shlex.join(argv)}` "
        "(what `make bench` runs).",
        "",
        "## Machine and versions",
        "",
        *(f"- {k}: {v}" for k, v in machine().items()),
        *(f"- {k} environment: {v}" for k, v in versions().items()),
        f"- 1-minute load average during the runs: {summary(loads)} "
        "(other work on the machine inflates the times; 2 means both cores busy)",
        "",
        "## The notebook's network, batch 32, 10 epochs (median (min–max) over runs)",
        "",
        "| run | s/epoch, steady (epochs 3–10) | process wall s | peak RSS MB "
        "| test accuracy % | runs |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "How much faster `digitlab train --preset seed` is (the other's median / digitlab's):",
        "",
        "| compared with | per epoch | whole process |",
        "|---|---|---|",
        *ratios,
        "",
        *(f"- {name}: not run: {error}" for name, error in errors.items()),
        "",
    ]
    return "\n".join(lines)


def keep_sections(text: str) -> str:
    """Carry over every section of the existing RESULTS.md that this script does not write.

    Only the sections `text` has (the machine and the notebook's four-way comparison) are
    regenerated; the others hold the figures of the other benchmarks (bench_serve.py,
    bench_presets.py, bench_time_to_accuracy.py, ...: long runs, made separately) and notes,
    and are kept untouched, in their order.
    """
    old = RESULTS.read_text() if RESULTS.exists() else ""
    generated = {line for line in text.splitlines() if line.startswith("## ")}
    for section in re.split(r"\n(?=## )", old)[1:]:  # each from its "## " heading on
        if section.splitlines()[0] not in generated:
            text += "\n" + section.rstrip("\n") + "\n"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", help="comma-separated contenders, e.g. digitlab,keras-jax")
    parser.add_argument(
        "--from-log", action="store_true", help="rewrite RESULTS.md from out/runs.jsonl only"
    )
    args = parser.parse_args()
    if args.from_log:
        results: dict[str, list[dict]] = {}
        for line in (OUT / "runs.jsonl").read_text().splitlines():
            run = json.loads(line)
            results.setdefault(run.pop("name"), []).append(run)
        repeats = max(len(runs) for runs in results.values())
        argv = ["benchmarks/run_all.py", "--repeats", str(repeats)]
        RESULTS.write_text(keep_sections(write_results(results, {}, argv)))
        return

    data = export_mnist()
    all_contenders = contenders(data)
    names = args.only.split(",") if args.only else list(all_contenders)
    errors = {}
    for name in names:
        venv = all_contenders[name].get("venv")
        if venv and (error := ensure_venv(venv)):
            errors[name] = error
    names = [n for n in names if n not in errors]
    results = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names) :] + names[: repeat % len(names)]  # alternate
        for name in order:
            try:
                result = run_once(name, all_contenders[name], seed=repeat)
            except (RuntimeError, OSError, ValueError, KeyError, IndexError) as exc:
                errors[name] = str(exc)[-500:]
                continue
            results[name].append(result)
            print(
                f"[{repeat + 1}/{args.repeats}] {name}: {result['steady_epoch_s']:.3f} s/epoch, "
                f"{result['wall_s']:.1f} s, {result['peak_rss_mb']:.0f} MB, "
                f"{100 * result['test_accuracy']:.2f}%",
                flush=True,
            )
            with (OUT / "runs.jsonl").open("a") as log:
                log.write(json.dumps({"name": name, **result}) + "\n")
    text = write_results(results, errors, ["benchmarks/run_all.py", *sys.argv[1:]])
    RESULTS.write_text(keep_sections(text))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
