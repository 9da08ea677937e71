"""`digitlab compare`: several runs side by side, as one PNG of curves and one HTML page."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from digitlab.errors import RunError
from digitlab.files import check_output_folder, write_text
from digitlab.html import figure, fixed, flatten, layer_text, percent, relative_href
from digitlab.html import render as render_page
from digitlab.plots import curve_values, save_figure
from digitlab.report.pages import REPORT_FILE
from digitlab.runs import Run

COMPARE_PNG = "compare.png"
COMPARE_HTML = "compare.html"
# Config fields that differ between any two runs without saying anything about them.
_NOT_SETTINGS = {"name", "created", "updated", "status", "epochs_done", "seed", "thresholds"}


@dataclass
class Comparison:
    """What `compare` found and wrote.

    `settings` holds the config fields that differ, one (field, [value per run]) row each;
    `results` the test accuracy, test loss, training seconds and epochs of each run.
    """

    runs: list[Run]
    labels: list[str]
    settings: list[tuple[str, list[str]]]
    results: list[tuple[str, list[str]]]
    png: Path
    html: Path

    def __rich__(self):
        """The table `digitlab compare` prints: the differing settings, then the results."""
        from rich.markup import escape
        from rich.table import Table

        table = Table("", *(escape(label) for label in self.labels))
        for name, values in self.settings:
            table.add_row(escape(name), *(escape(value) for value in values))
        if not self.settings:
            table.add_row("[i]same config[/i]", *("" for _ in self.labels))
        table.add_section()
        for name, values in self.results:
            table.add_row(f"[b]{name}[/b]", *(escape(value) for value in values))
        return table


def default_out_dir(runs_dir: Path) -> Path:
    """A fresh `runs_dir/compare-<YYYYmmdd-HHMMSS>[-N]` folder name."""
    stem = f"compare-{datetime.now():%Y%m%d-%H%M%S}"
    path, n = Path(runs_dir) / stem, 1
    while path.exists():
        n += 1
        path = Path(runs_dir) / f"{stem}-{n}"
    return path


def compare(runs: Sequence[Run], out_dir: Path) -> Comparison:
    """Overlay the runs' training and validation curves, one panel per metric, and tabulate
    the config fields that differ, then test accuracy, loss, seconds and epochs.

    Writes `compare.png` and `compare.html` (self-contained, with links to the runs' reports)
    into `out_dir`, creating it.

    Raises:
        RunError: fewer than two runs, a run given twice, or runs on different datasets or
            with different metrics (their curves and figures don't compare).

    Example:
        >>> import digitlab
        >>> runs = [digitlab.load_run(name) for name in ("RUN_A", "RUN_B")]
        >>> digitlab.compare(runs, "runs/compare")  # writes compare.png and compare.html
    """
    runs = list(runs)
    _check_comparable(runs)
    out_dir = check_output_folder(out_dir)  # a FIFO or a device there: refused before drawing
    labels = _labels(runs)
    settings = _differing_settings(runs)
    results = [
        ("test accuracy", [percent(run.metrics.test_accuracy) for run in runs]),
        ("test loss", [fixed(run.metrics.test_loss) for run in runs]),
        ("train seconds", [f"{run.metrics.train_seconds:.1f}" for run in runs]),
        ("epochs", [_epochs(run) for run in runs]),
    ]
    png = out_dir / COMPARE_PNG
    fig = _curves_figure(runs, labels)
    save_figure(fig, png)
    links = []
    for run, label in zip(runs, labels, strict=True):
        report = run.path / REPORT_FILE
        href = relative_href(report, out_dir) if report.exists() else None
        links.append({"label": label, "path": str(run.path), "href": href})
    html = render_page(
        "compare.html.j2",
        title=f"Comparing {len(runs)} runs",
        dataset=runs[0].dataset.name,
        links=links,
        labels=labels,
        settings=settings,
        results=results,
        figures=[figure(png, "Training and validation curves", _curves_caption())],
    )
    html_path = write_text(out_dir / COMPARE_HTML, html)
    return Comparison(runs, labels, settings, results, png, html_path)


def _check_comparable(runs: list[Run]) -> None:
    if len(runs) < 2:
        raise RunError(f"compare needs at least two runs, got {len(runs)}; name two or more")
    seen: dict[Path, Run] = {}
    for run in runs:
        key = run.path.resolve()
        if key in seen:
            raise RunError(f"run {run.path} is given twice; name each run once")
        seen[key] = run
    first = runs[0]
    for run in runs[1:]:
        if run.dataset.name != first.dataset.name:
            raise RunError(
                f"runs on different datasets don't compare: {first.name} is on "
                f"{first.dataset.name}, {run.name} on {run.dataset.name}; pick runs of one dataset"
            )
        if set(run.spec.train.metrics) != set(first.spec.train.metrics):
            raise RunError(
                f"runs with different metrics don't compare: {first.name} measures "
                f"{', '.join(first.spec.train.metrics)}, {run.name} "
                f"{', '.join(run.spec.train.metrics)}; pick runs that measure the same"
            )


def _labels(runs: list[Run]) -> list[str]:
    """Each run's folder name; a name that repeats (runs from two folders) gets " (2)" etc."""
    labels, counts = [], {}
    for run in runs:
        counts[run.name] = counts.get(run.name, 0) + 1
        labels.append(run.name if counts[run.name] == 1 else f"{run.name} ({counts[run.name]})")
    return labels


def _settings(run: Run) -> dict[str, str]:
    data = run.config.model_dump(mode="json", exclude=_NOT_SETTINGS)
    spec = data.pop("spec")
    spec["layers"] = " → ".join(layer_text(layer) for layer in run.spec.layers)
    fields = flatten(spec) | flatten(data)
    return {key: "–" if value is None else str(value) for key, value in fields.items()}


def _differing_settings(runs: list[Run]) -> list[tuple[str, list[str]]]:
    """The config fields whose values are not all the same, in the config's own order."""
    per_run = [_settings(run) for run in runs]
    keys = list(dict.fromkeys(key for fields in per_run for key in fields))
    rows = []
    for key in keys:
        values = [fields.get(key, "–") for fields in per_run]
        if len(set(values)) > 1:
            rows.append((key, values))
    return rows


def _epochs(run: Run) -> str:
    return str(run.epochs_done) + (" (interrupted)" if run.status != "complete" else "")


def _curves_caption() -> str:
    return "One panel per metric; one colour per run. Solid: training; dashed: validation."


def _curves_figure(runs: list[Run], labels: list[str]) -> Figure:
    keys = [key for run in runs for key in run.history]
    metrics = list(dict.fromkeys(key.removeprefix("val_") for key in keys))
    metrics.sort(key=lambda name: {"loss": 0, "accuracy": 1}.get(name, 2))
    if not metrics:
        fig = Figure(figsize=(5, 1.5))
        fig.text(0.5, 0.5, "none of these runs has a training history", ha="center", va="center")
        return fig
    cols = min(len(metrics), 2)
    rows = math.ceil(len(metrics) / cols)
    legend_rows = math.ceil((len(runs) + 2) / 2)
    fig = Figure(figsize=(5.5 * cols, 3.8 * rows + 0.3 * legend_rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(metrics) :]:
        ax.set_axis_off()
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for ax, name in zip(axes, metrics, strict=False):
        longest = 1
        for run, colour in zip(runs, colours, strict=True):
            for key, style in ((name, "-"), (f"val_{name}", "--")):
                values = curve_values(run.history.get(key, []))
                if values:
                    longest = max(longest, len(values))
                    epochs = range(1, len(values) + 1)
                    ax.plot(epochs, values, style, color=colour, marker="o", markersize=3)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_xlim(0.5, longest + 0.5)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
    handles = [
        Line2D([], [], color=colour, marker="o", label=label)
        for colour, label in zip(colours, labels, strict=True)
    ]
    handles += [
        Line2D([], [], color="black", linestyle="-", label="training"),
        Line2D([], [], color="black", linestyle="--", label="validation"),
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize="small")
    return fig
