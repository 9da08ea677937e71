"""What `digitlab experiment` prints: the built-in definitions and an experiment's results.

The CLI calls these; they hold the table layout so the command stays one call plus its output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from digitlab.experiments.definitions import BUILT_IN
from digitlab.experiments.schema import ExperimentRecord


def _count(n: int, noun: str) -> str:
    """ "1 epoch", "2 epochs": a count with its noun, singular for one."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def definitions_json() -> list[dict[str, Any]]:
    """The built-in experiments as `digitlab experiment list --json` prints them."""
    return [
        {
            "name": d.name,
            "question": d.question,
            "variants": [v.name for v in d.variants],
            "budget": d.budget.model_dump(),
        }
        for d in BUILT_IN.values()
    ]


def print_definitions(console, runs_dir: str | Path | None = None) -> None:
    """The built-in experiments as a table, then the newest experiment folders in `runs_dir`."""
    from rich.markup import escape
    from rich.table import Table

    from digitlab.experiments.record import list_experiments

    table = Table("experiment", "question", "variants", "default budget")
    for d in BUILT_IN.values():
        b = d.budget
        table.add_row(
            d.name,
            escape(d.question),
            escape(", ".join(v.name for v in d.variants)),
            f"{_count(b.epochs, 'epoch')}, {b.train_samples:,} digits, {_count(b.seeds, 'seed')}",
        )
    console.print(table)
    done = list_experiments(runs_dir)
    if done:
        console.print(f"{len(done)} experiment folder(s) in RUNS_DIR/experiments, latest:")
        for path, record in done[-5:]:
            console.print(f"  {path} ({record.status})", highlight=False, markup=False)


def _mean(summary, fmt: str) -> str:
    return format(summary.mean, fmt) if summary.mean is not None else "–"


def print_record(console, record: ExperimentRecord, folder: str | Path) -> None:
    """An experiment's results table, its conclusion as "- " lines, and its folder."""
    from rich.markup import escape
    from rich.table import Table

    table = Table("variant", "test accuracy", "train loss", "val loss", "gap", "seconds", "updates")
    for v in record.variants:
        acc = v.test_accuracy
        table.add_row(
            escape(v.name),
            f"{acc.mean:.2%} ± {acc.std:.2%}" if acc.mean is not None else "–",
            *(
                _mean(s, ".3f")
                for s in (v.final_train_loss, v.final_val_loss, v.generalization_gap)
            ),
            _mean(v.seconds, ".1f"),
            f"{v.updates:,}",
        )
    console.print(table)
    for line in record.conclusion:
        console.print(f"- {line}", highlight=False, markup=False, soft_wrap=True)
    console.print(f"experiment: {folder}", highlight=False, markup=False)
