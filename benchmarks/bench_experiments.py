"""Run the built-in experiments with their defaults; record time, verdicts, anchors.

    .venv/bin/python benchmarks/bench_experiments.py [dropout batch-size normalization
        dropout-size]
        [--runs-dir DIR] [--write] [--from-folders FOLDER ...]
        [--workers 1 2] [--seeds N] [--epochs N] [--train-samples N]

Each experiment runs as a user runs it, `digitlab experiment NAME` in a fresh process, so the
wall time includes imports and compilation (target: ≤ 10 minutes on 2 cores). Each primary
claim's verdict is read from experiment.json (the experiment computes it: Welch and TOST
tests, Holm-adjusted) and checked against the direction its literature anchor predicts.
`--write` replaces the "Experiments" section of benchmarks/RESULTS.md (the rows and
subsections of the experiments it ran: the others keep theirs), copies each record and its
figures to docs/experiments/ and regenerates the README's "What the notes claim, measured"
(scripts/notes_measured.py).

`--workers 1 2` (issue 24) runs each experiment once per worker count, `--workers N` (1: in
this one process, as by default; 2 or more: worker processes sharing the experiment's study),
and reports the wall time of each, the speed-up, and whether the records' figures and
verdicts are identical (the same seeds must give the same numbers however many workers ran
them); `--seeds`, `--epochs` and `--train-samples` reduce the budget for it. With `--write`
it replaces the "Experiments on many workers (issue 24)" section of RESULTS.md instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
DOCS = ROOT / "docs" / "experiments"
TARGET_SECONDS = 600
NAMES = ("dropout", "batch-size", "normalization", "dropout-size")
WORKERS_HEADING = "## Experiments on many workers (issue 24)"
# The figures the README shows (scripts/notes_measured.py: the first two of these it has)
DOCS_PLOTS = ("prediction.png", "forest.png", "accuracy.png")


def run(name: str, runs_dir: Path, flags: tuple[str, ...] = ()) -> tuple[float, dict, Path]:
    """`digitlab experiment NAME --json [FLAGS]` in a fresh process: (wall seconds, record,
    folder)."""
    env = {**os.environ, "DIGITLAB_RUNS_DIR": str(runs_dir)}
    runs_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    out = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "digitlab"), "experiment", name, "--json", *flags],
        env=env,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    seconds = time.perf_counter() - start
    record = json.loads(out.stdout)
    folder = sorted((runs_dir / "experiments").glob(f"*-{name}"))[-1]
    return seconds, record, folder


def _value(metric: str, value: float | None) -> str:
    if value is None:
        return "–"
    if metric == "test_accuracy":
        return f"{value * 100:+.2f} pts"
    if metric.endswith("_to_target"):
        return f"{value:+.1f} s" if metric.startswith("seconds") else f"{value:+,.0f}"
    return f"{value:+.3f}"


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def _claim_row(claim: dict) -> str:
    metric = claim["metric"]
    interval = ""
    if claim.get("low") is not None:
        interval = f" [{_value(metric, claim['low'])}, {_value(metric, claim['high'])}]"
    power = f"{claim['power']:.0%}" if claim.get("power") is not None else "–"
    detectable = _value(metric, claim.get("detectable")).lstrip("+")
    return (
        f"| {claim['name']} | {claim['statement']} ({claim.get('anchor', '')}) | "
        f"{_value(metric, claim.get('estimate'))}{interval} | "
        f"{_p(claim.get('p_adjusted'))} / {_p(claim.get('p_equivalence_adjusted'))} | "
        f"{power} (±{_value(metric, claim['margin']).lstrip('+')}); {detectable} | "
        f"{claim['verdict']} | {claim['literature']}"
        + (f": {claim['why']}" if claim.get("why") else "")
        + " |"
    )


def _span(values: set) -> str:
    return f"{min(values):,}" if len(values) == 1 else f"{min(values):,} to {max(values):,}"


def _epochs(record: dict) -> str:
    """The variants' epochs: "20", or "20 to 300" where min_updates raised some."""
    return _span({v.get("epochs") or record["budget"]["epochs"] for v in record["variants"]})


def _digits(record: dict) -> str:
    """The digits each epoch trained on: "5,000", or "500 to 20,000" in a size sweep."""
    fit = record["budget"]["fit_samples"]
    return _span({v.get("fit_digits") or fit for v in record["variants"]})


def section(results: list[tuple[str, float, dict, Path]]) -> str:
    lines = [
        "## Experiments",
        "",
        "`benchmarks/bench_experiments.py`: each built-in experiment with its defaults, run as "
        "`digitlab experiment NAME` in a fresh process (imports and compilation included) on "
        f"this machine's 2 cores. Target: ≤ {TARGET_SECONDS // 60} minutes each. Each primary "
        "claim's verdict comes from the record (Welch difference test and two one-sided "
        "equivalence tests against the claim's smallest effect of interest, Holm-adjusted "
        "over every test the experiment prints; each interval at its Holm step's level), and is "
        "checked against its anchor: agrees, disagrees, inconclusive or not tested (why).",
        "",
        "| experiment | budget | wall time | CPU time (all threads) | target met |",
        "|---|---|---|---|---|",
    ]
    for name, seconds, record, _ in results:
        b = record["budget"]
        held_out = b["train_samples"] - b["fit_samples"]
        tuning = sum(len(v.get("learning_rate_grid") or ()) for v in record["variants"])
        met = "yes" if seconds <= TARGET_SECONDS else "NO"
        cpu = f"{record['cpu_seconds'] / 60:.1f} min" if record.get("cpu_seconds") else "–"
        lines.append(
            f"| {name} | {len(record['variants'])} variants × {len(record['seeds'])} seeds"
            + (f" + {tuning} tuning runs" if tuning else "")
            + f", {_epochs(record)} epochs, {_digits(record)} + {held_out:,} validation digits"
            f" | {seconds / 60:.1f} min | {cpu} | {met} |"
        )
    for name, _, record, _folder in results:
        lines += ["", f"### {name}", "", "Answer (generated): " + " ".join(record["answer"])]
        lines += [
            "",
            "| variant | test accuracy | lr | epochs | train loss | val loss | gap | s/run |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for v in record["variants"]:
            acc = v["test_accuracy"]
            mean = f"{acc['mean']:.2%} ± {acc['std']:.2%}" if acc["mean"] is not None else "–"
            rate = f"{v['learning_rate']:g}" if v.get("learning_rate") else "default"
            if v.get("learning_rate_grid"):
                rate += " (tuned)"

            def m(key, v=v, fmt="{:.3f}"):
                s = v.get(key) or {}
                return fmt.format(s["mean"]) if s.get("mean") is not None else "–"

            lines.append(
                f"| {v['name']} | {mean} | {rate} | {v.get('epochs') or record['budget']['epochs']}"
                f" | {m('final_train_loss')} | {m('final_val_loss')} | "
                f"{m('generalization_gap', fmt='{:+.3f}')} | {m('seconds', fmt='{:.1f}')} |"
            )
        grids = [v for v in record["variants"] if v.get("learning_rate_grid")]
        if grids:
            lines += ["", "Learning-rate grids (final validation accuracy of each tuning run):", ""]
            for v in grids:
                points = ", ".join(
                    f"{g['learning_rate']:g}: "
                    + (
                        "diverged"
                        if g.get("diverged")
                        else "failed"
                        if g.get("val_accuracy") is None
                        else f"{g['val_accuracy']:.1%}"
                    )
                    for g in v["learning_rate_grid"]
                )
                lines.append(f"- {v['name']}: {points} → {v['learning_rate']:g}")
        lines += [
            "",
            "| claim | statement (anchor) | measured [adjusted CI] | adjusted p (difference / "
            "equivalence) | power at ±margin; 80%-detectable | verdict | literature |",
            "|---|---|---|---|---|---|---|",
            *(_claim_row(c) for c in record.get("claims", [])),
        ]
        lines += ["", "Every other test (generated):", ""]
        lines += [f"- {t['sentence']}" for t in record.get("tests", [])]
    return "\n".join(lines) + "\n"


def figures(record: dict) -> dict:
    """What the same seeds must reproduce: each variant's values across seeds and chosen
    rate, and each claim's and test's verdict and estimate."""
    keys = ("test_accuracy", "final_train_loss", "final_val_loss", "generalization_gap")
    return {
        "variants": {
            v["name"]: {"rate": v.get("learning_rate"), **{k: v[k]["values"] for k in keys}}
            for v in record["variants"]
        },
        "verdicts": [
            (t.get("name") or t["metric"], t["verdict"], t.get("estimate"))
            for t in [*record.get("claims", []), *record.get("tests", [])]
        ],
    }


def workers_section(rows: list[tuple[str, str, dict, dict, bool]], command: str) -> str:
    """RESULTS' section of `--workers`: wall and CPU time per worker count, speed-up, and
    whether the figures are identical."""
    counts = sorted({n for _, _, seconds, _, _ in rows for n in seconds})
    lines = [
        WORKERS_HEADING,
        "",
        f"`{command}`: each experiment run as `digitlab experiment NAME --workers N` in a "
        "fresh process on this machine's 2 cores, the wall time of each worker count (and the "
        "CPU time its record counts: the process's, or the sum of its cells'), the speed-up "
        "over one worker, and whether the records' figures (every seed's values, the chosen "
        "rates, every claim's and test's verdict and estimate) are identical.",
        "",
        "| experiment | budget | "
        + " | ".join(f"{n} worker{'s' * (n > 1)}" for n in counts)
        + " | speed-up | identical |",
        "|---|---|" + "---|" * len(counts) + "---|---|",
    ]
    for name, budget, seconds, cpu, same in rows:
        base = seconds.get(counts[0])
        speed = ", ".join(
            f"×{base / seconds[n]:.2f} ({n})" for n in counts[1:] if base and seconds.get(n)
        )
        cells = " | ".join(
            f"{seconds[n]:.0f} s (CPU {cpu[n]:.0f} s)" if n in seconds else "–" for n in counts
        )
        lines.append(f"| {name} | {budget} | {cells} | {speed} | {'yes' if same else 'NO'} |")
    return "\n".join(lines) + "\n"


def run_workers(args) -> None:
    """`--workers N ...`: each experiment once per worker count, compared."""
    runs_dir = args.runs_dir or Path(tempfile.mkdtemp(prefix="bench-experiments-"))
    given = {"--seeds": args.seeds, "--epochs": args.epochs, "--train-samples": args.train_samples}
    budget = [str(f) for flag, value in given.items() if value is not None for f in (flag, value)]
    rows = []
    for name in args.names:
        seconds, records = {}, {}
        for n in args.workers:
            load = os.getloadavg()[0]
            flags = (*budget, "--workers", str(n)) if n > 1 else tuple(budget)
            seconds[n], records[n], folder = run(name, runs_dir / f"workers-{n}", flags)
            print(
                f"{name}, {n} worker(s): {seconds[n]:.0f} s (load {load:.1f}), {folder}", flush=True
            )
        first = next(iter(records.values()))
        same = all(figures(r) == figures(first) for r in records.values())
        b = first["budget"]
        described = (
            f"{len(first['variants'])} variants × {b['seeds']} seeds, {b['epochs']} epochs, "
            f"{b['train_samples']:,} digits"
        )
        cpu = {n: r.get("cpu_seconds") or 0.0 for n, r in records.items()}
        rows.append((name, described, seconds, cpu, same))
    command = "benchmarks/bench_experiments.py " + " ".join(
        [*args.names, "--workers", *map(str, args.workers), *budget]
    )
    text = workers_section(rows, command)
    print(text)
    if args.write:
        write_section(text, WORKERS_HEADING)


def merged(text: str, current: str) -> str:
    """The new "## Experiments" section `text`, keeping from the `current` one the
    table rows and subsections of the built-ins not run this time, in `NAMES`' order."""
    start = current.find("## Experiments\n")
    if start == -1:
        return text
    end = current.find("\n## ", start + 1)
    old = current[start : end + 1 if end != -1 else len(current)]

    def parts(section: str) -> tuple[list[str], dict[str, str], dict[str, str]]:
        head, *subsections = section.split("\n### ")
        lines = head.splitlines()
        rows = {n: line for line in lines for n in NAMES if line.startswith(f"| {n} |")}
        blocks = {s.split("\n", 1)[0].strip(): "### " + s.rstrip("\n") for s in subsections}
        return [line for line in lines if line not in rows.values()], rows, blocks

    head, rows, blocks = parts(text)
    old_head, old_rows, old_blocks = parts(old)
    rows = {n: rows.get(n) or old_rows.get(n) for n in NAMES if n in rows or n in old_rows}
    blocks = {
        n: blocks.get(n) or old_blocks.get(n) for n in NAMES if n in blocks or n in old_blocks
    }
    rule = "|---|---|---|---|---|"
    at = head.index(rule) + 1
    notes = old_head[old_head.index(rule) + 1 :] if rule in old_head else []  # prose kept
    lines = [*head[:at], *rows.values(), *(notes if "".join(notes).strip() else head[at:])]
    return "\n".join(lines).rstrip("\n") + "\n\n" + "\n\n".join(blocks.values()) + "\n\n"


def write_section(text: str, heading: str = "## Experiments") -> None:
    current = RESULTS.read_text()
    start = current.find(heading + "\n")
    if start == -1:
        updated = current.rstrip("\n") + "\n\n" + text
    else:
        end = current.find("\n## ", start + 1)
        updated = current[:start] + text + (current[end + 1 :] if end != -1 else "")
    RESULTS.write_text(updated)


def copy_to_docs(name: str, folder: Path) -> None:
    """The record and its figures, for the README (`scripts/notes_measured.py`)."""
    DOCS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / "experiment.json", DOCS / f"{name}.json")
    record = json.loads((folder / "experiment.json").read_text())
    for plot in record.get("plots", []):
        if plot in DOCS_PLOTS:
            shutil.copyfile(folder / plot, DOCS / f"{name}-{plot}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(NAMES))
    parser.add_argument("--runs-dir", type=Path, default=None)
    parser.add_argument("--write", action="store_true", help="update RESULTS.md, docs, README")
    parser.add_argument(
        "--from-folders",
        nargs="*",
        type=Path,
        default=None,
        help="re-read finished experiment folders instead of running (wall time taken from "
        "their records)",
    )
    parser.add_argument(
        "--workers", nargs="*", type=int, default=None, help="time each worker count (issue 24)"
    )
    parser.add_argument("--seeds", type=int, default=None, help="with --workers: fewer seeds")
    parser.add_argument("--epochs", type=int, default=None, help="with --workers: fewer epochs")
    parser.add_argument("--train-samples", type=int, default=None, help="with --workers")
    args = parser.parse_args()
    if args.workers:
        run_workers(args)
        return
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
        write_section(merged(text, RESULTS.read_text()))
        for name, _, _, folder in results:
            copy_to_docs(name, folder)
        subprocess.run([sys.executable, str(ROOT / "scripts" / "notes_measured.py")], check=True)


if __name__ == "__main__":
    main()
