"""What `digitlab experiment` prints: the built-in definitions and an experiment's results.

The CLI calls these; they hold the table layout so the command stays one call plus its output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from digitlab.experiments.conclusions import SMOKE
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
        table.add_row(
            d.name,
            escape(d.question),
            escape(", ".join(v.name for v in d.variants)),
            _default_budget(d),
        )
    console.print(table)
    done = list_experiments(runs_dir)
    if done:
        console.print(f"{len(done)} experiment folder(s) in RUNS_DIR/experiments, latest:")
        for path, record in done[-5:]:
            console.print(f"  {path} ({record.status})", highlight=False, markup=False)


def _span(values: set[int], noun: str) -> str:
    low, high = min(values), max(values)
    return _count(low, noun) if low == high else f"{low:,}–{high:,} {noun}s"


def _default_budget(definition) -> str:
    """ "15 epochs, 5,000 digits (+1,000 validation), 10 seeds": the epochs and digits its
    variants' runs train (`min_updates` raises epochs, `train_digits` lowers digits)."""
    from digitlab.experiments import plan

    b = definition.budget
    specs = [
        plan.variant_spec(definition, v, b, 0, definition.learning_rate_policy)
        for v in definition.variants
    ]
    epochs = _span({s.train.epochs for s in specs}, "epoch")
    digits = _span({plan.fit_digits(s) for s in specs}, "digit")
    held = b.train_samples - b.fit_samples
    return f"{epochs}, {digits} (+{held:,} validation), {_count(b.seeds, 'seed')}"


def _mean(summary, fmt: str) -> str:
    return format(summary.mean, fmt) if summary.mean is not None else "–"


def _accuracy(summary) -> str:
    """ "95.12% ± 0.21%"; one seed has no spread to show: "95.12%"."""
    if summary.mean is None:
        return "–"
    if summary.std is None or len(summary.values) < 2:
        return f"{summary.mean:.2%}"
    return f"{summary.mean:.2%} ± {summary.std:.2%}"


def print_record(console, record: ExperimentRecord, folder: str | Path) -> None:
    """An experiment's results as a learner reads them: a smoke run says so on the first
    line; then the answer in plain words, the claims with their verdicts, a compact table
    of the variants (their changes as short diffs), and a one-line "how we know" with
    where the report is. A record from before claims and answers prints its conclusion."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from digitlab.report import lesson

    say = lambda text, **style: console.print(  # noqa: E731
        text, highlight=False, markup=False, soft_wrap=True, **style
    )
    if record.smoke:
        say(SMOKE[0].upper() + SMOKE[1:] + ".", style="bold yellow")
    for line in record.answer:
        say(line, style="bold")
    if not record.answer:
        for line in record.conclusion:
            say(f"- {line}")
    for claim in lesson.claim_rows(record):
        if claim["verdict"] == "not tested":
            say(f"  {claim['literature']:<12} {claim['statement']} ({claim['why']})")
            continue
        why = f"; {claim['why']}" if claim["why"] else ""
        say(
            f"  {claim['literature']:<12} {claim['statement']} {claim['estimate']}: "
            f"{claim['verdict']}, expected {claim['expect']}{why}"
        )
    shared, changes = lesson.changes(record)
    if shared:
        say(f"Every variant: {', '.join(shared)}.")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("variant (changes)", min_width=16, ratio=1)
    for name in ("test accuracy", "train / val loss", "gap", "s/run", "updates"):
        table.add_column(name, justify="right", no_wrap=True)
    for v in record.variants:
        acc = v.test_accuracy
        change = ", ".join(changes[v.name])
        table.add_row(
            escape(v.name) + (f"\n[dim]{escape(change)}[/dim]" if change else ""),
            _accuracy(acc),
            f"{_mean(v.final_train_loss, '.3f')} / {_mean(v.final_val_loss, '.3f')}",
            _mean(v.generalization_gap, ".3f"),
            _mean(v.seconds, ".1f"),
            f"{v.updates:,}",
        )
    console.print(table)
    say(_how_we_know(record))
    report = Path(folder) / "report.html"
    say(f"experiment: {folder}" + (f"   report: {report}" if report.is_file() else ""))


def _how_we_know(record: ExperimentRecord) -> str:
    """ "How we know: 5 of 6 comparisons tested, Holm-adjusted …; each run trained …; took …"."""
    from digitlab.report import lesson

    parts = []
    judged = (*record.claims, *record.tests)
    if judged:
        tested = sum(test.verdict != "not tested" for test in judged)
        parts.append(
            f"{tested} of {len(judged)} comparisons tested (Welch and equivalence tests, "
            "Holm-adjusted; the report lists each with its interval and power)"
        )
    elif record.statistics:
        parts.append(record.statistics.rstrip("."))
    fit, budget = lesson.fit_digits(record), record.budget
    if fit is not None and isinstance(budget.get("epochs"), int):
        seeds = budget.get("seeds")
        parts.append(
            (f"{_count(seeds, 'seed')} per variant, " if isinstance(seeds, int) else "")
            + f"{lesson.epochs_text(record, budget['epochs'])} on "
            + f"{lesson.digits_text(record, fit)} digits each"
        )
    if record.wall_seconds:
        parts.append(f"took {lesson.duration(record.wall_seconds)}")
    return "How we know: " + "; ".join(parts) + "."
