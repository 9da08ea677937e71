"""Run the three built-in experiments with their defaults; record wall time, effects, anchors.

    .venv/bin/python benchmarks/bench_experiments.py [dropout batch-size normalization]
        [--runs-dir DIR] [--write]

Each experiment runs as a user runs it, `digitlab experiment NAME` in a fresh process, so the
wall time includes imports and compilation (target: ≤ 5 minutes on 2 cores). The measured
effects are read back from experiment.json and checked against the direction each
experiment's literature anchor predicts: "agrees" when the difference points the anchor's
way and Welch's t-test across seeds separates it from the seed-to-seed spread (p < 0.05),
"same direction, not significant", or "disagrees". `--write` replaces the "Experiments"
section of benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from digitlab.experiments.conclusions import difference  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
TARGET_SECONDS = 300
NAMES = ("dropout", "batch-size", "normalization")


def _variant(record: dict, name: str) -> dict:
    return next(v for v in record["variants"] if v["name"] == name)


def _verdict(values_a, values_b, expect_higher: bool) -> tuple[str, float, float | None]:
    """Whether mean(a) − mean(b) points the expected way, beyond the seed spread."""
    d = difference(values_a, values_b)
    right_way = d.mean > 0 if expect_higher else d.mean < 0
    if d.p is None:
        word = "same direction, one seed" if right_way else "opposite direction, one seed"
    elif d.measurable:
        word = "agrees" if right_way else "disagrees"
    else:
        word = "same direction, not significant" if right_way else "opposite, not significant"
    return word, d.mean, d.p


def _check(record, a, b, key, expect_higher, claim, scale=1.0, unit=""):
    va, vb = _variant(record, a)[key]["values"], _variant(record, b)[key]["values"]
    word, mean, p = _verdict(va, vb, expect_higher)
    p_text = f", p = {p:.3f}" if p is not None else ""
    return f"| {claim} | {a} − {b}: {mean * scale:+.3f}{unit}{p_text} | {word} |"


def _val_loss_at(record_dir: Path, record: dict, name: str, updates: int) -> list[float]:
    """Each seed's validation loss at the first epoch end with ≥ `updates` weight updates."""
    variant = _variant(record, name)
    per_epoch = variant["updates"] // record["budget"]["epochs"]
    epoch = max(1, -(-updates // per_epoch))
    from digitlab.runs import read_run

    return [
        read_run(record_dir / "runs" / run).history["val_loss"][epoch - 1]
        for run in variant["runs"]
    ]


def anchors(name: str, record: dict, folder: Path) -> list[str]:
    """Table rows: claim, measured difference, verdict."""
    rows = []
    if name == "dropout":
        rows.append(
            _check(
                record,
                "wide-0.5",
                "wide-0",
                "test_accuracy",
                True,
                "dropout raises test accuracy (wide net)",
                100,
                " points",
            )
        )
        rows.append(
            _check(
                record,
                "wide-0.5",
                "wide-0",
                "generalization_gap",
                False,
                "dropout shrinks the generalisation gap (wide net)",
            )
        )
        rows.append(
            _check(
                record,
                "notebook-0.5",
                "notebook-0",
                "test_accuracy",
                True,
                "dropout raises test accuracy (notebook net)",
                100,
                " points",
            )
        )
        rows.append(
            _check(
                record,
                "notebook-0.5",
                "notebook-0",
                "generalization_gap",
                False,
                "dropout shrinks the generalisation gap (notebook net)",
            )
        )
    elif name == "batch-size":
        rows.append(
            _check(
                record,
                "batch-32",
                "full-batch",
                "final_val_loss",
                False,
                "per epoch, mini-batches beat full-batch GD (LeCun §4.1)",
            )
        )
        rows.append(
            _check(
                record,
                "batch-1",
                "batch-32",
                "final_val_loss",
                False,
                "per epoch, batch 1 beats batch 32",
            )
        )
        full = _variant(record, "full-batch")["updates"]
        at_full = _val_loss_at(folder, record, "batch-1024", full)
        word, mean, p = _verdict(
            at_full, _variant(record, "full-batch")["final_val_loss"]["values"], False
        )
        rows.append(
            f"| per update, a large batch is at least as good: batch-1024 vs full-batch "
            f"after {full} updates | {mean:+.3f} val loss, p = {p if p is None else round(p, 3)} "
            f"| {word} |"
        )
        rows.append(
            _check(
                record,
                "batch-1024",
                "batch-32",
                "generalization_gap",
                True,
                "large batches generalise worse: a larger gap (Keskar et al.; a fair test "
                "needs equal training loss, which the large batches don't reach here)",
            )
        )
    elif name == "normalization":
        rows.append(
            _check(
                record,
                "scale-raw",
                "scale-unit",
                "test_accuracy",
                False,
                "raw 0–255 pixels train worse than /255",
                100,
                " points",
            )
        )
        sat = {}
        for v in ("scale-raw", "scale-unit"):
            sat[v] = [
                next(iter(layers.values()))["saturated"][-1]
                for layers in _variant(record, v)["activations"].values()
            ]
        word, mean, p = _verdict(sat["scale-raw"], sat["scale-unit"], True)
        rows.append(
            f"| raw pixels saturate the first sigmoid layer (Glorot & Bengio Fig. 2) | "
            f"saturated fraction raw {np.mean(sat['scale-raw']):.0%} vs /255 "
            f"{np.mean(sat['scale-unit']):.0%} | {word} |"
        )
        first = {
            v: _val_loss_at(
                folder, record, v, _variant(record, v)["updates"] // record["budget"]["epochs"]
            )
            for v in ("batchnorm", "all-sigmoid")
        }
        word, mean, p = _verdict(first["batchnorm"], first["all-sigmoid"], False)
        rows.append(
            "| batch norm trains a 3×100 sigmoid net faster (Ioffe & Szegedy): validation loss "
            f"after the first epoch | batchnorm − all-sigmoid: {mean:+.3f}, "
            f"p = {p if p is None else round(p, 3)} | {word} |"
        )
        rows.append(
            _check(
                record,
                "batchnorm",
                "all-sigmoid",
                "test_accuracy",
                True,
                "... and ends at least as accurate",
                100,
                " points",
            )
        )
        rows.append(
            _check(
                record,
                "scale-standardize",
                "scale-unit",
                "test_accuracy",
                True,
                "standardised inputs train at least as well as /255 (LeCun)",
                100,
                " points",
            )
        )
    return rows


def run(name: str, runs_dir: Path) -> tuple[float, dict, Path]:
    env = {**os.environ, "DIGITLAB_RUNS_DIR": str(runs_dir)}
    start = time.perf_counter()
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "digitlab"), "experiment", name, "--json"],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    record = json.loads(out.stdout)
    folder = sorted((runs_dir / "experiments").glob(f"*-{name}"))[-1]
    return seconds, record, folder


def section(results: list[tuple[str, float, dict, Path]]) -> str:
    lines = [
        "## Experiments",
        "",
        "`benchmarks/bench_experiments.py`: each built-in experiment with its defaults, run as "
        "`digitlab experiment NAME` in a fresh process (imports and compilation included) on "
        "this machine's 2 cores, shared with other work while measured, so times may be "
        f"inflated. Target: ≤ {TARGET_SECONDS // 60} minutes each. "
        "Verdicts: \"agrees\" = the difference points the anchor's way and Welch's t-test over "
        "the seeds separates it from the spread (p < 0.05).",
        "",
        "| experiment | budget | wall time | CPU time (all threads) | target met |",
        "|---|---|---|---|---|",
    ]
    for name, seconds, record, _ in results:
        b = record["budget"]
        held_out = b["train_samples"] - b["fit_samples"]
        met = "yes" if seconds <= TARGET_SECONDS else "NO"
        cpu = f"{record['cpu_seconds'] / 60:.1f} min" if record.get("cpu_seconds") else "–"
        lines.append(
            f"| {name} | {len(record['variants'])} variants × {len(record['seeds'])} seeds, "
            f"{b['epochs']} epochs, {b['fit_samples']:,} + {held_out:,} "
            f"validation digits | {seconds / 60:.1f} min | "
            f"{cpu} | {met} |"
        )
    for name, _, record, folder in results:
        lines += [
            "",
            f"### {name}",
            "",
            "| variant | test accuracy | train loss | val loss | gap | s/run | updates |",
            "|---|---|---|---|---|---|---|",
        ]
        for v in record["variants"]:
            acc = v["test_accuracy"]
            lines.append(
                f"| {v['name']} | {acc['mean']:.2%} ± {acc['std']:.2%} | "
                f"{v['final_train_loss']['mean']:.3f} | {v['final_val_loss']['mean']:.3f} | "
                f"{v['generalization_gap']['mean']:+.3f} | {v['seconds']['mean']:.1f} | "
                f"{v['updates']:,} |"
            )
        lines += [
            "",
            "| anchor claim | measured | verdict |",
            "|---|---|---|",
            *anchors(name, record, folder),
        ]
        lines += ["", "Conclusion (generated):", ""] + [f"- {c}" for c in record["conclusion"]]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    current = RESULTS.read_text()
    start = current.find("## Experiments")
    if start == -1:
        updated = current.rstrip("\n") + "\n\n" + text
    else:
        end = current.find("\n## ", start + 1)
        updated = current[:start] + text + (current[end + 1 :] if end != -1 else "")
    RESULTS.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(NAMES))
    parser.add_argument("--runs-dir", type=Path, default=None)
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    parser.add_argument(
        "--from-folders",
        nargs="*",
        type=Path,
        default=None,
        help="re-read finished experiment folders instead of running (wall "
        "time taken from their records)",
    )
    args = parser.parse_args()
    results = []
    if args.from_folders:
        for folder in args.from_folders:
            record = json.loads((folder / "experiment.json").read_text())
            results.append((record["name"], record["wall_seconds"], record, folder))
    else:
        runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="bench-experiments-"))
        for name in args.names:
            seconds, record, folder = run(name, runs_dir)
            print(f"{name}: {seconds:.0f} s, {folder}", flush=True)
            results.append((name, seconds, record, folder))
    text = section(results)
    print(text)
    if args.write:
        write_section(text)


if __name__ == "__main__":
    main()
