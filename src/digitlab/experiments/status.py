"""Where experiments stand: cells done, running (and how long ago each last beat), failed and
to do, per variant and per machine, read from their studies (`digitlab experiment status`).

Without a storage, the experiments of a runs folder: those run on workers through the
journal in their folder, and those run in one process through their experiment.json.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna

from digitlab.errors import DigitlabError, RunError, SpecError
from digitlab.experiments import queue
from digitlab.experiments.queue import HEARTBEAT, Cell
from digitlab.experiments.record import list_experiments
from digitlab.tune.storages import journal_exists, open_storage, storage_label

COLUMNS = ("done", "running", "failed", "to do")


@dataclass
class Progress:
    """One experiment's cells: per variant and per machine, done/running/failed/to do."""

    name: str
    where: str  # its folder, or its study and storage
    study: str = ""  # the Optuna study (`digitlab tune dashboard --study`), if any
    storage: str = ""
    variants: dict[str, Counter] = field(default_factory=dict)
    machines: dict[str, Counter] = field(default_factory=dict)
    running: list[dict[str, Any]] = field(default_factory=list)  # cell, machine, beat age

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "where": self.where,
            "study": self.study,
            "storage": self.storage,
            "variants": {k: _counts(c) for k, c in self.variants.items()},
            "machines": {k: _counts(c) for k, c in self.machines.items()},
            "running": self.running,
        }


def _counts(counter: Counter) -> dict[str, int]:
    return {column: counter.get(column, 0) for column in COLUMNS}


def of_study(study: optuna.Study, label: str, now: datetime | None = None) -> Progress:
    """An experiment study's progress; a running cell's heartbeat age in seconds."""
    setup = queue.setup_of(study)
    now = now or datetime.now(UTC)
    cells = queue.read_cells(study)
    found = Progress(setup.get("name", study.study_name), label, study.study_name, label)
    expected = _expected(setup)
    order = [v["name"] for v in setup["definition"].get("variants", [])]
    found.variants = {variant: Counter() for variant in order}
    known = set(cells.trained) | cells.diverged | cells.skipped | set(cells.running)
    known |= cells.waiting | set(cells.failed)
    for cell in sorted({*expected, *known}, key=lambda c: (c.variant, c.seed, c.rate or 0.0)):
        column = (
            "done" if cells.resolved(cell) else
            "running" if cell in cells.running else
            "failed" if cell in cells.failed else "to do"
        )  # fmt: skip
        found.variants.setdefault(cell.variant, Counter())[column] += 1
        machine = _machine(cells, cell)
        if machine:
            found.machines.setdefault(machine, Counter())[column] += 1
    for cell, trial in sorted(cells.running.items(), key=lambda item: item[1].number):
        beat = trial.user_attrs.get(HEARTBEAT)
        since = datetime.fromisoformat(beat) if beat else trial.datetime_start
        age = None if since is None else max(0.0, (now - _aware(since)).total_seconds())
        machine = str(trial.user_attrs.get("machine", ""))
        found.running.append({"cell": cell.key, "machine": machine, "heartbeat_age": age})
    return found


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.astimezone(UTC)


def _machine(cells: queue.Cells, cell: Cell) -> str:
    """The machine that trained, runs, or last failed a cell ("" for one not tried yet)."""
    if cell in cells.trained:
        return cells.trained[cell].machine
    if cell in cells.running:
        return str(cells.running[cell].user_attrs.get("machine", ""))
    if cell in cells.failed:
        return str(cells.failed[cell][-1].user_attrs.get("machine", ""))
    return ""


def _expected(setup: dict[str, Any]) -> list[Cell]:
    from digitlab.experiments.distributed import planned_cells

    return planned_cells(setup)


def of_storage(storage: str) -> list[Progress]:
    """Every experiment study in a storage, oldest first.

    Raises:
        DigitlabError: the storage can't be opened; SpecError: a file that is no journal.
    """
    opened, label = open_storage(storage), storage_label(storage)
    studies = queue.experiment_studies(opened)
    return [
        of_study(optuna.load_study(study_name=s.study_name, storage=opened), label) for s in studies
    ]


def of_runs_folder(runs_dir: str | Path | None) -> list[Progress]:
    """The experiments of a runs folder: from the journal in the folder of those run on
    workers, from experiment.json for those run in one process."""
    found = []
    for folder, record in list_experiments(runs_dir):
        journal = folder / queue.JOURNAL_FILE
        if journal_exists(journal):
            try:
                found += [_at(p, folder) for p in of_storage(str(journal))]
                continue
            except (DigitlabError, SpecError, RunError):
                pass  # an unreadable journal: the record says what was done
        progress = Progress(record.name, str(folder))
        for variant in record.variants:
            done = len(variant.runs) + len(variant.diverged_seeds)
            todo = max(0, len(record.seeds) - done - len(variant.failed_seeds))
            progress.variants[variant.name] = Counter(
                {"done": done, "failed": len(variant.failed_seeds), "to do": todo}
            )
        found.append(progress)
    return found


def _at(progress: Progress, folder: Path) -> Progress:
    progress.where = str(folder)
    return progress


def print_status(console, found: list[Progress]) -> None:
    """Each experiment as two tables (per variant, per machine), its running cells with the
    age of their heartbeat, and the dashboard command that shows its study."""
    from rich.markup import escape
    from rich.table import Table

    if not found:
        console.print("No experiments here; start one with `digitlab experiment NAME`.")
        return
    for progress in found:
        console.print(f"[bold]{escape(progress.name)}[/bold]  {escape(progress.where)}")
        for title, rows in (("variant", progress.variants), ("machine", progress.machines)):
            if not rows:
                continue
            table = Table(title=None, box=None, pad_edge=False)
            table.add_column(title)
            for column in COLUMNS:
                table.add_column(column, justify="right")
            for name, counts in rows.items():
                table.add_row(escape(name), *(str(counts.get(c, 0)) for c in COLUMNS))
            console.print(table)
        for cell in progress.running:
            age = cell["heartbeat_age"]
            beat = "no heartbeat yet" if age is None else f"heartbeat {age:.0f} s ago"
            console.print(f"  running: {escape(cell['cell'])} on {escape(cell['machine'])}, {beat}")
        if progress.study:
            console.print(
                f"  dashboard: digitlab tune dashboard --study {progress.study} "
                f"--storage {escape(progress.storage)}",
                highlight=False,
                soft_wrap=True,
            )
        console.print()
