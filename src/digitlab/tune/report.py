"""What a study looks like: the live table of trials `tune` draws, and `tune report`'s
plots (optimization history, parameter importances, parallel coordinates) and top trials.

Both read only the storage, so they show the trials of every worker and of every machine
that shares the study.
"""

from __future__ import annotations

import csv
import io
import warnings
from datetime import datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.table import Table

from digitlab.errors import DigitlabError
from digitlab.files import write_text
from digitlab.runs import default_runs_dir
from digitlab.search_space import describe
from digitlab.tune.storages import (
    DEFAULT_STUDY,
    FINISHED,
    journal_exists,
    journal_path,
    open_storage,
    quiet_optuna,
    storage_label,
)


def format_duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


def best_trial(trials: list[FrozenTrial]) -> FrozenTrial | None:
    """The complete trial of highest value (the first of equals), or None before one."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


class TrialsView:
    """A Rich renderable of a study's trials, read from the storage each time it is drawn.

    Used by `tune` as the live table; it reads only the storage, so it shows the trials of
    every worker, and of other machines that share the study.
    """

    def __init__(self, study: optuna.Study, rows: int = 20):
        self.study, self.rows = study, rows

    def __rich__(self) -> Table:
        trials = self.study.get_trials(deepcopy=False)
        best = best_trial(trials)
        counts = {s: sum(t.state == s for t in trials) for s in TrialState}
        title = (
            f"study {self.study.study_name}: {counts[TrialState.COMPLETE]} complete · "
            f"{counts[TrialState.PRUNED]} pruned · {counts[TrialState.RUNNING]} running"
            + (f" · {counts[TrialState.FAIL]} failed" if counts[TrialState.FAIL] else "")
            + (f" · best {best.value:.2%} (trial {best.number})" if best else "")
        )
        table = Table(title=title)
        for name, width in (("trial", 5), ("state", 8), ("val acc", 7), ("epochs", 6), ("time", 7)):
            table.add_column(name, no_wrap=True, min_width=width)
        table.add_column("params")
        now = datetime.now()
        for trial in trials[-self.rows :]:
            steps = trial.intermediate_values
            value = trial.value if trial.value is not None else steps.get(max(steps, default=0))
            started = trial.datetime_start or now
            table.add_row(
                str(trial.number),
                trial.state.name.lower(),
                f"{value:.2%}" if value is not None else "–",
                str(max(steps, default=0)),
                format_duration(((trial.datetime_complete or now) - started).total_seconds()),
                describe(trial.params),
                style="bold" if trial is best else None,
            )
        return table


REPORT_PLOTS = ("optimization_history.png", "param_importances.png", "parallel_coordinate.png")
TOP_TRIALS_CSV = "top_trials.csv"
TOP_TRIALS_MD = "top_trials.md"


def report(
    study: str = DEFAULT_STUDY,
    *,
    storage: str | Path | None = None,
    runs_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    top: int = 10,
) -> list[Path]:
    """Write a study's plots (history, importances, parallel coordinates) and top trials.

    Args:
        study: the study's name.
        storage, runs_dir: where it lives, as for `tune`.
        out_dir: the folder to write (default `<runs_dir>/tune-report-<study>`).
        top: how many of the best complete trials the table lists.

    Returns:
        The paths written. Parameter importances need complete trials with different values
        and are left out before that.

    Raises:
        DigitlabError: no such study in the storage, or it has no complete trial yet.
    """
    quiet_optuna()
    label = storage_label(storage, runs_dir)
    if "://" not in str(storage) and not journal_exists(journal_path(storage, runs_dir)):
        raise DigitlabError(f"no studies in {label} yet; start one with `digitlab tune`")
    if top < 1:
        raise DigitlabError(f"--top must be at least 1, got {top}")
    opened = open_storage(storage, runs_dir)
    try:
        the_study = optuna.load_study(study_name=study, storage=opened)
    except KeyError:
        names = optuna.get_all_study_names(opened)
        raise DigitlabError(
            f"no study '{study}' in {label}; studies there: {', '.join(names) or 'none'}"
        ) from None
    complete = the_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise DigitlabError(f"study '{study}' has no complete trial yet; run `digitlab tune`")
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    out = Path(out_dir) if out_dir is not None else root / f"tune-report-{study}"
    written = _write_plots(the_study, complete, out)
    written += _write_top_trials(the_study, complete, out, top, label)
    return written


def _write_plots(the_study, complete, out: Path) -> list[Path]:
    """Optuna's matplotlib views of the study, 11×6 inches each; importances once two complete
    trials differ in value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as views

    from digitlab.plots import save_figure

    target = "validation accuracy"
    always = ["hidden_layers", "units_1", "dropout_1", "activation", "optimizer",
              "learning_rate", "learning_rate_schedule", "batch_size"]  # fmt: skip  # every trial
    drawn = {
        REPORT_PLOTS[0]: lambda: views.plot_optimization_history(the_study, target_name=target),
        REPORT_PLOTS[2]: lambda: views.plot_parallel_coordinate(
            the_study, params=[p for p in always if p in complete[0].params], target_name=target
        ),
    }
    if len({t.value for t in complete}) >= 2:  # importances explain differences in value
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        drawn[REPORT_PLOTS[1]] = lambda: views.plot_param_importances(
            the_study, evaluator=evaluator, target_name=target
        )
    written = []
    for name, draw in drawn.items():
        with warnings.catch_warnings():  # e.g. a parameter the space fixes: a flat axis
            warnings.simplefilter("ignore", UserWarning)
            figure = draw().figure
        figure.set_size_inches(11, 6)
        figure.tight_layout()
        save_figure(figure, out / name)
        plt.close(figure)
        written.append(out / name)
    return written


def _write_top_trials(study, complete, out: Path, top: int, label: str) -> list[Path]:
    ranked = sorted(complete, key=lambda t: (-t.value, t.number))[:top]
    header = ["rank", "trial", "val_accuracy", "hidden_layers", "units", "activation",
              "dropout", "optimizer", "learning_rate", "learning_rate_schedule", "batch_size",
              "seconds"]  # fmt: skip
    rows = []
    for rank, trial in enumerate(ranked, start=1):
        p, depth = trial.params, trial.params["hidden_layers"]
        rows.append([
            rank, trial.number, f"{trial.value:.4f}", depth,
            "-".join(str(p[f"units_{i}"]) for i in range(1, depth + 1)), p["activation"],
            "-".join(f"{p[f'dropout_{i}']:.2f}" for i in range(1, depth + 1)), p["optimizer"],
            f"{p['learning_rate']:.2e}", p.get("learning_rate_schedule", "constant"),
            p["batch_size"], f"{trial.duration.total_seconds():.1f}",
        ])  # fmt: skip
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in FINISHED}
    lines = [
        f"# Study {study.study_name}: top {len(rows)} trials",
        "",
        f"Storage: {label}. Trials: {counts['complete']} complete, {counts['pruned']} pruned. "
        "Validation accuracy on the held-out end of the training set; the test set is not used.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(map(str, row)) + " |" for row in rows),
    ]
    return [
        write_text(out / TOP_TRIALS_CSV, buffer.getvalue()),
        write_text(out / TOP_TRIALS_MD, "\n".join(lines) + "\n"),
    ]
