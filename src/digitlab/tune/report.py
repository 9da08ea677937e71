"""What a study looks like: the live table of trials `tune` draws, and `tune report`'s
plots (optimization history, parameter importances, parallel coordinates) and top trials.

Both read only the storage, so they show the trials of every worker and of every machine
that shares the study.
"""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
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
from digitlab.tune.study import METRIC

if TYPE_CHECKING:
    from matplotlib.figure import Figure


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
# Below this many complete trials a ranking of parameter importances is flagged as unreliable
# (issue 23's threshold). fANOVA fits a random forest to the complete trials only.
MIN_TRIALS_FOR_IMPORTANCES = 20
# The parallel-coordinate plot colours trials by value with this part of Optuna's "Blues",
# from its light end: the full map starts at white, so the worst trial was drawn white on the
# plot's light grey (#E5E5E5). Blues(0.4) is (0.58, 0.77, 0.87), a blue that stands out on it.
VISIBLE_PART = (0.4, 1.0)


def importance_warning(complete: int, parameters: int | None = None) -> str | None:
    """Why parameter importances from `complete` trials can't be trusted yet, or None from
    `MIN_TRIALS_FOR_IMPORTANCES` on (and with no complete trial, when there are none)."""
    if not 0 < complete < MIN_TRIALS_FOR_IMPORTANCES:
        return None
    what = f"the effects of {parameters} parameters" if parameters else "each parameter's effect"
    return (
        f"warning: parameter importances rest on only {complete} complete "
        f"trial{'s' if complete != 1 else ''}, fewer than {MIN_TRIALS_FOR_IMPORTANCES}: "
        f"so few points can't separate {what} from chance, and the ranking may change with "
        "the next trials; run more (e.g. --trials 50) before trusting it"
    )


@dataclass
class TuneReport:
    """What `report` wrote, and what a person should know before reading it."""

    study: str
    paths: list[Path]
    complete: int  # the complete trials the plots and importances are drawn from
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> list[str]:
        """Lines for a person: each file written, then the warnings."""
        return [f"wrote {path}" for path in self.paths] + self.warnings


def report(
    study: str = DEFAULT_STUDY,
    *,
    storage: str | Path | None = None,
    runs_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    top: int = 10,
) -> TuneReport:
    """Write a study's plots (history, importances, parallel coordinates) and top trials.

    Args:
        study: the study's name.
        storage, runs_dir: where it lives, as for `tune`.
        out_dir: the folder to write (default `<runs_dir>/tune-report-<study>`).
        top: how many of the best complete trials the table lists.

    Returns:
        A `TuneReport`: the paths written, and a warning when the importances rest on fewer
        than `MIN_TRIALS_FOR_IMPORTANCES` complete trials (also written in the plot and the
        Markdown). Parameter importances need complete trials with different values and are
        left out before that.

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
    shared = set.intersection(*(set(trial.params) for trial in complete))  # what fANOVA ranks
    warning = importance_warning(len(complete), len(shared))
    written = _write_plots(report_figures(the_study, complete, warning), out)
    written += _write_top_trials(the_study, complete, out, top, label, warning)
    return TuneReport(study, written, len(complete), [warning] if warning else [])


def report_figures(
    the_study: optuna.Study, complete: list[FrozenTrial], warning: str | None = None
) -> dict[str, Figure]:
    """Optuna's matplotlib views of the study by file name, 11×6 inches each: history,
    parallel coordinates (every trial in a visible blue), and importances once two complete
    trials differ in value, with `warning` above them."""
    import matplotlib

    matplotlib.use("Agg")
    from optuna.visualization import matplotlib as views

    always = ["hidden_layers", "units_1", "dropout_1", "activation", "optimizer",
              "learning_rate", "learning_rate_schedule", "batch_size"]  # fmt: skip  # every trial
    params = [p for p in always if p in complete[0].params]

    def parallel_coordinate():
        axes = views.plot_parallel_coordinate(the_study, params=params, target_name=METRIC)
        return _visible_lines(axes)

    def importances():
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        axes = views.plot_param_importances(the_study, evaluator=evaluator, target_name=METRIC)
        return _warned(axes, warning)

    drawn = {
        REPORT_PLOTS[0]: lambda: views.plot_optimization_history(the_study, target_name=METRIC),
        REPORT_PLOTS[2]: parallel_coordinate,
    }
    if len({t.value for t in complete}) >= 2:  # importances explain differences in value
        drawn[REPORT_PLOTS[1]] = importances
    figures = {}
    for name, draw in drawn.items():
        with warnings.catch_warnings():  # e.g. a parameter the space fixes: a flat axis
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            figure = draw().figure
        figure.set_size_inches(11, 6)
        figure.tight_layout()
        figures[name] = figure
    return figures


def _visible_lines(axes):
    """Recolour the parallel-coordinate lines with `VISIBLE_PART` of their colour map, away
    from its white end, so no trial is drawn white on the white page."""
    from matplotlib.collections import LineCollection
    from matplotlib.colors import ListedColormap

    for lines in axes.collections:
        if isinstance(lines, LineCollection):
            cmap = lines.get_cmap()
            low, high = VISIBLE_PART
            if sum(cmap(0.0)[:3]) < sum(cmap(1.0)[:3]):  # Blues_r, when a study minimizes
                low, high = 1 - high, 1 - low
            span = np.linspace(low, high, 256)
            lines.set_cmap(ListedColormap(cmap(span), name=f"{cmap.name}_visible"))
    return axes  # the colour bar follows its lines


def _warned(axes, warning: str | None):
    """The importances with `warning` wrapped in red above them."""
    if warning is not None:
        import textwrap

        axes.figure.suptitle(textwrap.fill(warning, 130), color="firebrick", fontsize=9)
    return axes


def _write_plots(figures: dict[str, Figure], out: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    from digitlab.plots import save_figure

    written = []
    for name, figure in figures.items():
        save_figure(figure, out / name)
        plt.close(figure)
        written.append(out / name)
    return written


def _write_top_trials(
    study, complete, out: Path, top: int, label: str, warning: str | None
) -> list[Path]:
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
        *([f"**{warning[0].upper()}{warning[1:]}.**", ""] if warning else []),
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(map(str, row)) + " |" for row in rows),
    ]
    return [
        write_text(out / TOP_TRIALS_CSV, buffer.getvalue()),
        write_text(out / TOP_TRIALS_MD, "\n".join(lines) + "\n"),
    ]
