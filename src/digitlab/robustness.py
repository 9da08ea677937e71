"""How a run holds up when digits leave MNIST: its answers and its verdict under MNIST-C.

`measure_robustness` applies the 15 corruptions of MNIST-C (`digitlab.corruptions`; Mu &
Gilmer 2019, https://arxiv.org/abs/1906.02337) to held-out test digits and measures, for the
clean digits and for each corruption:

- **accuracy**: the share of digits read right;
- **confident**: the share the verdict marks confident (`confidence.verdicts`, the very
  verdict `digitlab predict` gives, with the run's stored thresholds);
- **selective accuracy**: the accuracy among the confident ones, the figure a user who
  trusts "confident" lives with;
- **AURC**: the area under the risk–coverage curve (Geifman & El-Yaniv 2017,
  https://arxiv.org/abs/1705.08500): answers ranked most trusted first, the error rate of
  the top k, averaged over every k. Lower is better; a perfect ranking of a model that errs
  on a share e of digits scores about e²/2, a random ranking e. The ranking is the verdict's:
  confident answers before the others, then by top probability within each, so the curve
  passes through the verdict's own point (its coverage, its error rate).

Held-out digits: the run's calibration used the first half of the test split when it has no
validation split, so those runs are measured on the second half only (as
`benchmarks/bench_ood.py` does). `--samples` draws that many of them at random, with a seed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.data import PIXEL_MAX
from digitlab.errors import DataError
from digitlab.runs import Run
from digitlab.runs.folder import ROBUSTNESS_FILE, check_replaceable, write_robustness

DEFAULT_SAMPLES = 5000  # digits per corruption: ~50 s for the seed preset on 2 busy cores
FIGURE_FILE = "robustness.png"
CLEAN = "clean"
EXAMPLES = 4  # digits in the figure's grid, each under every corruption


# -------------------------------------------------------------------------------------- AURC
def aurc(correct: np.ndarray, rank: np.ndarray) -> float:
    """The area under the risk–coverage curve: `correct` answers ranked by `rank` (higher:
    trusted first); the error rate of the top k answers, averaged over k = 1…N.

    Ties in `rank` are taken in every order at once: within a tied group the errors accrue
    at the group's average rate, so the result doesn't depend on how a sort breaks ties.
    """
    correct, rank = np.asarray(correct, bool), np.asarray(rank, np.float64)
    if len(correct) == 0:
        return float("nan")
    order = np.argsort(-rank, kind="stable")
    errors, rank = ~correct[order], rank[order]
    starts = np.flatnonzero(np.r_[True, rank[1:] != rank[:-1]])
    sizes = np.diff(np.r_[starts, len(rank)])
    group_errors = np.add.reduceat(errors.astype(np.float64), starts)
    before = np.repeat(np.cumsum(group_errors) - group_errors, sizes)
    position = np.arange(len(rank)) - np.repeat(starts, sizes) + 1
    expected = before + position * np.repeat(group_errors / sizes, sizes)
    return float(np.mean(expected / np.arange(1, len(rank) + 1)))


def trust_rank(confidence: np.ndarray, confident: np.ndarray | None) -> np.ndarray:
    """The verdict's ranking: confident answers first (by top probability), then the rest;
    by top probability alone for a run without thresholds."""
    confidence = np.asarray(confidence, np.float64)
    return confidence if confident is None else confidence + 2.0 * np.asarray(confident)


# -------------------------------------------------------------------------------- one score
def score(
    name: str, correct: np.ndarray, confidence: np.ndarray, confident: np.ndarray | None
) -> dict[str, Any]:
    """One row of the results: counts, accuracy, confident share, selective accuracy, AURC.

    `confident` is None for a run without thresholds: those figures are then None."""
    n, right = len(correct), int(np.sum(correct))
    row: dict[str, Any] = {
        "corruption": name,
        "digits": n,
        "correct": right,
        "accuracy": right / n,
        "confident": None,
        "confident_correct": None,
        "confident_share": None,
        "selective_accuracy": None,
        "aurc": aurc(correct, trust_rank(confidence, confident)),
    }
    if confident is not None:
        sure = int(np.sum(confident))
        sure_right = int(np.sum(confident & correct))
        row.update(
            confident=sure,
            confident_correct=sure_right,
            confident_share=sure / n,
            selective_accuracy=sure_right / sure if sure else None,
        )
    return row


def pooled_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The corruptions' rows (not the clean digits') pooled: their digits and counts added
    up, so the selective accuracy is that of every confident answer under any corruption;
    the AURC is the mean of theirs. None when no corruption was measured."""
    corrupted = [row for row in rows if row["corruption"] != CLEAN]
    if not corrupted:
        return None

    def total(key: str) -> int | None:
        values = [row[key] for row in corrupted]
        return None if any(v is None for v in values) else int(sum(values))

    digits, correct, sure, sure_right = (
        total(key) for key in ("digits", "correct", "confident", "confident_correct")
    )
    return {
        "corruption": f"all {len(corrupted)} pooled",
        "digits": digits,
        "correct": correct,
        "accuracy": correct / digits,
        "confident": sure,
        "confident_correct": sure_right,
        "confident_share": None if sure is None else sure / digits,
        "selective_accuracy": sure_right / sure if sure else None,
        "aurc": float(np.mean([row["aurc"] for row in corrupted])),
    }


# ------------------------------------------------------------------------------ the results
@dataclass
class Robustness:
    """`digitlab robustness`'s results: a row per corruption (clean first), the digits they
    were measured on, and the figure's example digits."""

    run: str
    dataset: str
    rows: list[dict[str, Any]]
    index: np.ndarray  # each measured digit's place in the test split
    seed: int
    calibrated: bool
    seconds: float = 0.0
    examples: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """What robustness.json and `--json` hold."""
        first, last = (int(self.index.min()), int(self.index.max())) if len(self.index) else (0, 0)
        return {
            "run": self.run,
            "dataset": self.dataset,
            "digits": len(self.index),
            "test_digits_from": first,
            "test_digits_to": last,
            "seed": self.seed,
            "calibrated": self.calibrated,
            "rows": self.rows,
            "pooled": pooled_row(self.rows),
            "seconds": round(self.seconds, 2),
            "figure": FIGURE_FILE,
        }

    def table(self):
        """The results as a `rich` table."""
        from rich.table import Table

        table = Table(*HEADERS)
        for i, row in enumerate(table_rows(self.to_dict())):
            table.add_row(*row, end_section=i == 0 or i == len(self.rows) - 1)
        return table

    def print(self, console) -> None:
        """What `digitlab robustness` prints: what was measured, the table, the files."""
        data = self.to_dict()
        console.print(
            f"run {self.run}: {data['digits']:,} held-out test digits "
            f"(#{data['test_digits_from']:,}–{data['test_digits_to']:,}, seed {self.seed}), "
            f"clean and under {len(self.rows) - 1} MNIST-C corruptions, in {self.seconds:.1f} s"
        )
        console.print(self.table())
        if not self.calibrated:
            console.print(
                f"no confidence thresholds in this run: `digitlab calibrate {self.run}` adds them"
            )
        for path in self.files:
            console.print(f"wrote {path}")


HEADERS = ("corruption", "accuracy", "confident", "selective accuracy", "AURC")


def table_rows(data: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """robustness.json's rows as text, with counts: the terminal's table and the report's."""

    def share(value: float | None, count: int | None = None) -> str:
        if value is None:
            return "–"
        return f"{value:.2%}" + (f" ({count:,})" if count is not None else "")

    pooled = data.get("pooled")
    return [
        (
            str(row["corruption"]).replace("_", " "),
            share(row["accuracy"], row["correct"]),
            share(row["confident_share"], row["confident"]),
            share(row["selective_accuracy"], row["confident_correct"]),
            f"{row['aurc']:.4f}" + (" (mean)" if row is pooled else ""),
        )
        for row in [*data["rows"], *([pooled] if pooled else [])]
    ]


# --------------------------------------------------------------------------------- measuring
def held_out(test_size: int) -> np.ndarray:
    """The test digits no run's calibration saw: the second half
    (`confidence.calibration_split` took the first)."""
    from digitlab.confidence import calibration_size

    return np.arange(calibration_size(test_size), test_size)


def measure_robustness(
    run: Run,
    corruptions: Sequence[str] | None = None,
    *,
    samples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    data_dir: str | Path | None = None,
) -> Robustness:
    """The run's answers and verdicts on held-out test digits, clean and corrupted (in
    memory: `save_robustness` keeps them with the run).

    Args:
        run: the run; its network reads the digits through `Run.predict_proba` (NumPy, no
            Keras, where the run's layers allow).
        corruptions: names of `corruptions.CORRUPTIONS`; default all 15.
        samples: held-out digits to measure (at most all of them); default 5,000.
        seed: draws the digits and every corruption's randomness; default 0.

    Raises:
        DataError: an unknown corruption, samples below 1, or no dataset.
        RunError: the run's model or confidence files are unreadable.
    """
    from digitlab.corruptions import CORRUPTIONS, check_names, corrupt
    from digitlab.data import load_dataset

    names = CORRUPTIONS if corruptions is None else check_names(corruptions)
    if samples < 1:
        raise DataError(f"--samples must be at least 1; got {samples}")
    started = time.perf_counter()
    _, (x_test, y_test) = load_dataset(run.dataset.name, data_dir=data_dir)
    pool = held_out(len(y_test))
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(pool, size=min(samples, len(pool)), replace=False))
    images, labels = x_test[index], y_test[index]
    shown = _example_positions(labels)
    rows, examples = [], {}
    for name in (CLEAN, *names):
        batch = images if name == CLEAN else corrupt(images, name, seed=seed, index=index)
        row, examples[name] = _measure(run, name, batch, labels, shown)
        rows.append(row)
    return Robustness(
        run=run.name,
        dataset=run.dataset.name,
        rows=rows,
        index=index,
        seed=seed,
        calibrated=bool(rows) and rows[0]["confident"] is not None,
        seconds=time.perf_counter() - started,
        examples=examples,
    )


def _measure(
    run: Run, name: str, batch: np.ndarray, labels: np.ndarray, shown: np.ndarray
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One batch's row of results (`score`), and what the figure shows of it."""
    from digitlab.confidence import verdicts

    probabilities = run.predict_proba(batch)
    said = verdicts(run, batch, probabilities)  # the verdict `digitlab predict` gives
    confidence = np.array([v["confidence"] for v in said])
    confident = None
    if said and said[0]["confident"] is not None:
        confident = np.array([v["confident"] for v in said], dtype=bool)
    predicted = probabilities.argmax(axis=1)
    example = {
        "images": batch[shown],
        "labels": labels[shown],
        "predicted": predicted[shown],
        "verdicts": [said[i] for i in shown],
    }
    return score(name, predicted == labels, confidence, confident), example


def _example_positions(labels: np.ndarray) -> np.ndarray:
    """The figure's digits: the first of as many different classes as EXAMPLES asks."""
    _, first = np.unique(labels, return_index=True)
    return np.sort(first)[:EXAMPLES]


def save_robustness(run: Run, result: Robustness) -> Robustness:
    """Keep the results with the run: robustness.json and robustness.png. Returns `result`
    with `files` filled. (`digitlab robustness` then rewrites the run's report.html, if it
    has one, whose section reads them: `report.write_run_report`.)

    Raises:
        RunError: one of the files is a folder, a FIFO or a device (said before writing).
        WriteError: a file can't be written.
    """
    check_replaceable(run.path, ROBUSTNESS_FILE, FIGURE_FILE, doing="robustness")
    picture = save_robustness_figure(result, run.class_names, run.path / FIGURE_FILE)
    result.files = [write_robustness(run.path, result.to_dict()), picture]
    return result


# ---------------------------------------------------------------------------------- a figure
def save_robustness_figure(result: Robustness, class_names: Sequence[str], path: Path) -> Path:
    """The example digits under every corruption, each with the run's answer and verdict,
    above bars of accuracy and selective accuracy per corruption (with the confident share)."""
    from matplotlib.figure import Figure

    from digitlab import plots

    names = [row["corruption"] for row in result.rows]
    shown = len(next(iter(result.examples.values()))["labels"]) if result.examples else 0
    fig = Figure(figsize=(max(8.0, 1.05 * len(names)), 1.25 * shown + 4.2), layout="constrained")
    grid, bars = fig.subfigures(2, 1, height_ratios=[max(shown, 1) * 1.25, 4.2])
    if shown:
        axes = grid.subplots(shown, len(names), squeeze=False)
        for col, name in enumerate(names):
            example = result.examples[name]
            for row in range(shown):
                _draw_example(axes[row, col], example, row, class_names)
                plots.label_heatmap(
                    axes[row, col], name.replace("_", " ") if row == shown - 1 else ""
                )
        grid.suptitle(
            "The run's answer and verdict (green: right and confident, orange: not confident, "
            "red: wrong yet confident)",
            fontsize=10,
        )
    _draw_bars(bars.subplots(), result)
    return plots.save_figure(fig, path)


def _draw_example(ax, example: dict[str, Any], row: int, class_names: Sequence[str]) -> None:
    image = example["images"][row]
    predicted, label = int(example["predicted"][row]), int(example["labels"][row])
    verdict = example["verdicts"][row]
    ax.imshow(image, cmap="gray", vmin=0, vmax=PIXEL_MAX, interpolation="nearest")
    said = "confident" if verdict["confident"] else verdict["reason"] or "–"
    colour = (
        "tab:orange"
        if not verdict["confident"]
        else "tab:green"
        if predicted == label
        else "tab:red"
    )
    ax.set_title(f"{class_names[predicted]} · {said}", fontsize=8, color=colour)


def _draw_bars(ax, result: Robustness) -> None:
    names = [row["corruption"].replace("_", " ") for row in result.rows]
    x = np.arange(len(names))
    accuracy = [100 * row["accuracy"] for row in result.rows]
    ax.bar(x - 0.2, accuracy, 0.4, label="accuracy", color="tab:blue")
    if result.calibrated:
        selective = [100 * (row["selective_accuracy"] or 0) for row in result.rows]
        share = [100 * row["confident_share"] for row in result.rows]
        ax.bar(
            x + 0.2, selective, 0.4, label="selective accuracy (among confident)", color="tab:green"
        )
        ax.plot(x, share, "kD", markersize=5, label="marked confident")
        for where, row in zip(x, result.rows, strict=True):
            if not row["confident"]:
                ax.text(where + 0.2, 2, "none confident", rotation=90, fontsize=7, ha="center")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=9)
    ax.set_xlabel("corruption (MNIST-C)")
    ax.set_ylabel(f"% of {len(result.index):,} held-out test digits")
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, fontsize=8, frameon=False)
