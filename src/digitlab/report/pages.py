"""report.html of a run and of an experiment: one offline page each, from Jinja2 templates."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from digitlab import plots
from digitlab.errors import DigitlabError, RunError
from digitlab.experiments.record import RECORD_FILE, RUNS_FOLDER, read_record
from digitlab.experiments.schema import ExperimentRecord, VariantResult
from digitlab.files import is_file, write_text
from digitlab.html import (
    figure,
    fixed,
    flatten,
    layer_text,
    metric,
    number,
    percent,
    relative_href,
    render,
)
from digitlab.report import lesson
from digitlab.runs import (
    EXPERIMENTS_FOLDER,
    INSPECT_DIR,
    REPORT_FILE,
    Run,
    default_runs_dir,
    find_run,
    has_config,
    load_run,
    read_run,
    run_name,
    runs_command,
)
from digitlab.runs.folder import read_robustness
from digitlab.schema import RunConfig

# The pictures a run folder holds: the same names as digitlab.evaluation's (which imports
# Keras; a report must not), checked equal by tests/test_report.py.
CURVES_PNG = "training_curves.png"
CONFUSION_PNG = "confusion_matrix.png"
MISCLASSIFIED_PNG = "misclassified.png"
NORMALIZED_PNG = "confusion_matrix_normalized.png"
# `digitlab inspect`'s pictures in RUN/inspect/: digitlab.insight's names (it imports Keras)
# and, for a run that recorded its training, insight.recording's; checked equal by
# tests/test_pictures.py; each with its title and caption in the report.
INSPECT_PICTURES = (
    (
        "weights.png",
        "First-layer weights",
        "One tile per unit: its weight on each input pixel, red positive, blue negative; "
        "pixels no digit inks are blank.",
    ),
    (
        "activations.png",
        "Activations per hidden layer",
        "Histogram of each layer's activations, and each unit's mean activation, sorted.",
    ),
    (
        "class_inputs.png",
        "Average digit and template per class",
        "Each class's template is its average digit's ink times the mean gradient of its "
        "logit: red ink speaks for the class, blue against (blank: pixels inked by under 1% "
        "of training digits).",
    ),
    (
        "activation_histograms.png",
        "Activations over training",
        "Each hidden layer's outputs after every epoch (bins up, epochs across, colour the "
        "log of the count), with the saturated or dead share of its units on the right axis.",
    ),
    (
        "training_signals.png",
        "Gradients, update sizes and the gradient's noise over training",
        "Per layer with weights, its gradient norm and the ratio of the next update to the "
        "weights (about 1e-3 is CS231n's rule of thumb, the dashed line), and the gradient "
        "noise scale B_simple ± its standard error.",
    ),
)


# ------------------------------------------------------------------------------------- a run
def write_run_report(run: Run | str | Path, config: RunConfig | None = None) -> Path:
    """Write `report.html` into a run folder and return its path.

    The page holds the config, the metrics and per-class report, the training curves, the
    confusion matrix (counts, and a row-normalised view of the errors) and the misclassified
    gallery, with every picture inlined. Pictures the folder lacks but can be drawn from its
    files (curves from history.csv, both confusion views from metrics.json) are drawn into it
    first; the misclassified gallery needs the model and the data (`digitlab evaluate RUN`).

    Args:
        run: a `Run`, or a run folder. A folder without config.json yet (a run being staged,
            whose config.json is written last) needs `config`.
        config: the run's config, when the folder doesn't hold it yet.

    Raises:
        RunError: the folder is not a readable run, or a picture in it is unreadable.
        WriteError: the page can't be written.
    """
    if not isinstance(run, Run):
        run = read_run(Path(run), config)
    pictures = _run_pictures(run)
    name = run_name(run.path)
    html = render(
        "run.html.j2",
        run=run,
        name=name,
        title=f"Run {name}",
        description=run.spec.description,
        layers=[layer_text(layer) for layer in run.spec.layers],
        settings=_settings(run),
        summary=_summary(run),
        classes=_class_rows(run),
        most_confused=list((run.metrics.model_extra or {}).get("most_confused") or []),
        figures=pictures,
        inspection=_inspection(run),
        inspect_figures=_inspect_pictures(run),
        robustness=_robustness(run),
    )
    return write_text(run.path / REPORT_FILE, html)


def _robustness(run: Run) -> dict[str, Any] | None:
    """`digitlab robustness`'s table and figure, if the run has readable results; None
    otherwise (damaged results leave the section out, not the report)."""
    from digitlab.robustness import FIGURE_FILE, HEADERS, table_rows

    try:
        data = read_robustness(run.path)
        if data is None:
            return None
        picture = run.path / FIGURE_FILE  # not a name from the file: it could point anywhere
        caption = "Each example digit under every corruption with the run's answer and verdict"
        return {
            "digits": int(data["digits"]),
            "seed": int(data["seed"]),
            "calibrated": bool(data["calibrated"]),
            "headers": HEADERS,
            "rows": table_rows(data),
            "figure": figure(picture, "Under MNIST-C", caption) if is_file(picture) else None,
        }
    except (RunError, ValueError, KeyError, TypeError):
        return None


def _inspection(run: Run) -> dict[str, Any] | None:
    """The per-layer table of the run's `digitlab inspect` summary, if it has a readable one;
    None otherwise (a damaged summary leaves the table out, not the report)."""
    try:
        data = run.inspect_summary()
        if data is None:
            return None
        share = lambda value: "–" if value is None else f"{value:.1%}"  # noqa: E731
        rows = [
            (
                str(layer["name"]),
                str(layer["activation"]),
                str(layer["units"]),
                f"{layer['mean']:.3f}",
                share(layer["saturated_fraction"]),
                share(layer["dead_fraction"]),
            )
            for layer in data["layers"]
        ]
        return {"digits": int(data["digits"]), "rows": rows}
    except (RunError, ValueError, KeyError, TypeError):
        return None


def _inspect_pictures(run: Run) -> list[dict[str, str]]:
    """The pictures `digitlab inspect` left in RUN/inspect/, inlined, in their usual order."""
    folder = run.path / INSPECT_DIR
    return [
        figure(folder / name, title, caption)
        for name, title, caption in INSPECT_PICTURES
        if is_file(folder / name)
    ]


def _settings(run: Run) -> list[tuple[str, Any]]:
    """The config as (name, value) rows: training settings, data, preprocessing, versions."""
    rows = [("network", run.spec.name), ("input", run.spec.input)]
    rows += [(f"train.{k}", v) for k, v in flatten(run.spec.train.model_dump(mode="json")).items()]
    dataset = run.dataset
    rows += [
        ("dataset", dataset.name),
        ("dataset.train_samples", dataset.train_samples or "–"),
        ("dataset.test_samples", dataset.test_samples or "–"),
        ("preprocessing.scale", f"{run.preprocessing.scale:.6g}"),
        ("preprocessing.shape", " × ".join(map(str, run.preprocessing.shape))),
        ("preprocessing.level_background", run.preprocessing.level_background),
        ("seed", run.config.seed),
    ]
    rows += [(f"versions.{k}", v) for k, v in run.config.versions.items()]
    return [(name, "–" if value is None else value) for name, value in rows]


def _summary(run: Run) -> list[tuple[str, str]]:
    """The key figures, one format per quantity: accuracy and the other shares of digits as
    percentages, losses with 4 decimals, counts as whole numbers."""
    metrics = run.metrics
    rows = [
        ("status", run.status),
        ("epochs", str(run.epochs_done)),
        ("test accuracy", percent(metrics.test_accuracy)),
        ("test loss", fixed(metrics.test_loss)),
        ("test errors", number(metrics.test_errors)),
        ("training time", f"{metrics.train_seconds:.1f} s"),
    ]
    if metrics.epoch_seconds:
        mean = sum(metrics.epoch_seconds) / len(metrics.epoch_seconds)
        rows.append(("seconds per epoch", f"{mean:.2f} s"))
    for key in run.history:
        if run.history[key]:
            rows.append((f"final {key}", metric(key, run.history[key][-1])))
    return rows


def _class_rows(run: Run) -> list[dict[str, Any]]:
    """The per-class report, classes first, then averages: precision, recall and F1 as
    percentages (like the accuracy), support as a whole number (sklearn's averages carry
    it as a float)."""
    report = (run.metrics.model_extra or {}).get("classification_report")
    if not isinstance(report, dict):
        return []
    rows = []
    for name, values in report.items():
        if not isinstance(values, dict):
            continue  # "accuracy": one number, already in the summary
        rows.append(
            {
                "name": name,
                "average": name not in run.class_names,
                "precision": percent(values.get("precision")),
                "recall": percent(values.get("recall")),
                "f1": percent(values.get("f1-score")),
                "support": number(values.get("support")),
            }
        )
    return rows


def _run_pictures(run: Run) -> list[dict[str, str]]:
    folder, cm = run.path, run.metrics.confusion_matrix
    if not (folder / CURVES_PNG).exists() and run.history:
        plots.save_training_curves(run.history, folder / CURVES_PNG)
    if cm is not None:
        if not (folder / CONFUSION_PNG).exists():
            plots.save_confusion_matrix(cm, run.class_names, folder / CONFUSION_PNG)
        plots.save_confusion_matrix_normalized(cm, run.class_names, folder / NORMALIZED_PNG)
    shown = [
        (CURVES_PNG, "Training curves", "Loss and metrics per epoch, training and validation."),
        (CONFUSION_PNG, "Confusion matrix", "Counts: row = true digit, column = prediction."),
        (
            NORMALIZED_PNG,
            "Errors per true class",
            "Each row as % of its true class; the colour scale spans the errors only.",
        ),
        (MISCLASSIFIED_PNG, "Misclassified test digits", "The most confident mistakes first."),
    ]
    return [
        figure(folder / name, title, caption)
        for name, title, caption in shown
        if (folder / name).exists()
    ]


# ----------------------------------------------------------------------------- an experiment
EXPERIMENT_FILE = RECORD_FILE  # report's name for experiments/record.py's file, kept importable
read_experiment = read_record  # likewise: experiment.json as a typed ExperimentRecord


def write_experiment_report(folder: Path, runs_dir: Path | None = None) -> Path:
    """Write `report.html` into an experiment folder and return its path.

    The page reads top down as a lesson: the question, the answer in plain words (a smoke
    run says it is one), the first figure (the forest plot of the tested differences if
    drawn), the primary claims and their literature check, the variants (their changes as
    short diffs against their preset), the other figures, and last, folded, "How we know":
    every test with its Holm-adjusted p values and power, the budget and the time taken.
    Every PNG in the folder is inlined; each run links to its report (written if missing).
    Runs are looked up as given, in the folder and its `runs/`, in `runs_dir`, and in the
    runs folder that holds `experiments/` (the folder's grandparent). Records written before
    claims and answers existed render too: their conclusion stands in for the answer.

    Raises:
        RunError: experiment.json is missing, unreadable or not an experiment record
            (`experiments.record.read_record`), or a picture is unreadable.
        WriteError: the page can't be written.
    """
    folder = Path(folder)
    record = read_record(folder)
    roots = _roots(folder, runs_dir)
    shared, diffs = lesson.changes(record)
    # A smoke run's runs are linked as folders: drawing each run's report would take longer
    # than the smoke run trained (`digitlab report RUN` writes one).
    links = partial(_run_link, folder=folder, roots=roots, write_missing=not record.smoke)
    figures = _experiment_pictures(folder, record.plots)
    leads = [f for name in ("prediction.png", "forest.png") for f in figures if f["file"] == name]
    lead = leads[0] if leads else figures[0] if figures else None  # the prediction first
    html = render(
        "experiment.html.j2",
        title=f"Experiment {record.name or folder.name}",
        record=record,
        folder=folder.name,
        answer=list(record.answer or record.conclusion),
        details=list(record.conclusion) if record.answer else [],
        claims=lesson.claim_rows(record),
        tests=lesson.comparison_rows(record),
        shared=shared,
        variants=[_variant_row(v, diffs[v.name], links) for v in record.variants],
        columns=_variant_columns(record),
        lead=lead,
        figures=[f for f in figures if f is not lead],
        budget_sentence=lesson.budget_sentence(record),
        budget=list(flatten(record.budget).items()),
        details_rows=_experiment_details(record),
    )
    return write_text(folder / REPORT_FILE, html)


def write_run_reports(folder: Path, record: ExperimentRecord, runs_dir: Path | None = None):
    """The report.html of each of the record's runs that lacks one (none for a smoke run):
    what the experiment's report links to, written before it (and timed with the
    experiment)."""
    if not record.smoke:
        roots = _roots(Path(folder), runs_dir)
        for ref in (ref for variant in record.variants for ref in variant.runs):
            _run_link(ref, Path(folder), roots)


def _roots(folder: Path, runs_dir: Path | None) -> list[Path]:
    """Where an experiment's runs are looked up: as given, in the folder and its `runs/`,
    in `runs_dir`, and in the runs folder that holds `experiments/`."""
    return [
        folder,
        folder / RUNS_FOLDER,  # where `digitlab experiment` trains its runs
        *([Path(runs_dir)] if runs_dir is not None else []),
        folder.parent.parent,
    ]


def _experiment_details(record: ExperimentRecord) -> list[tuple[str, str]]:
    """The rest of "How we know": baseline, learning-rate policy, target, time taken."""
    rows = [
        ("baseline variant", record.baseline),
        ("learning-rate policy", record.learning_rate_policy),
        ("target validation accuracy", percent(record.target) if record.target else ""),
        ("wall-clock time", lesson.duration(record.wall_seconds) if record.wall_seconds else ""),
        (
            "CPU time, all threads",
            lesson.duration(record.cpu_seconds) if record.cpu_seconds else "",
        ),
    ]
    return [(label, value) for label, value in rows if value]


def _variant_columns(record: ExperimentRecord) -> dict[str, bool]:
    """Which optional columns the variants table needs: time to target, if some variant
    has it."""
    return {
        "to_target": any(getattr(v, key) is not None for v in record.variants for key in TO_TARGET)
    }


# VariantResult's time-to-target figures: field, label, format in the table.
TO_TARGET = {
    "epochs_to_target": "epochs",
    "updates_to_target": "updates",
    "examples_to_target": "digits",
    "seconds_to_target": "seconds",
}


def _variant_row(
    variant: VariantResult, changes: list[str], link_of: Callable[[str], dict[str, str | None]]
) -> dict[str, Any]:
    """One row of the variants table: the record's figures, the changes against the preset,
    the learning rate and its grid, and a link to each run's report."""
    to_target = [(label, getattr(variant, key)) for key, label in TO_TARGET.items()]
    to_target = [(label, summary) for label, summary in to_target if summary is not None]
    runs = [
        link | {"seed": _seed_of(link["name"], variant.name)} for link in map(link_of, variant.runs)
    ]
    return {
        "name": variant.name,
        "description": variant.description,
        "changes": changes,
        "grid": lesson.grid_text(variant),
        "batch_size": variant.batch_size,
        "learning_rate": variant.learning_rate,
        "epochs": variant.epochs,
        "accuracy": variant.test_accuracy,
        "train_accuracy": variant.train_accuracy,
        "train_loss": variant.final_train_loss,
        "val_loss": variant.final_val_loss,
        "gap": variant.generalization_gap,
        "matched": variant.gap_at_matched_loss,
        "to_target": to_target,
        "never_reached": bool(to_target) and all(s.mean is None for _, s in to_target),
        "seconds": variant.seconds,
        "updates": variant.updates,
        "runs": runs,
        "by_seed": all(run["seed"] is not None for run in runs),
    }


def _seed_of(run: str, variant: str) -> str | None:
    """The seed in a run name the experiment gave (`[timestamp-]VARIANT-seedN`), or None."""
    found = re.fullmatch(rf"(?:\d{{8}}-\d{{6}}-)?{re.escape(variant)}-seed(\d+)", run)
    return found[1] if found else None


def _run_link(
    ref: str, folder: Path, roots: list[Path], write_missing: bool = True
) -> dict[str, str | None]:
    """A run of the experiment: its name, and a relative link to its report.html (written
    now if the run lacks one and `write_missing`; else to the run's folder), or None when
    the run can't be found or read."""
    candidates = [Path(ref)] if Path(ref).is_absolute() else [root / ref for root in roots]
    for path in candidates:
        if not has_config(path):
            continue
        report = path / REPORT_FILE
        if not report.exists() and not write_missing:
            return {"name": Path(ref).name, "href": relative_href(path, folder)}
        if not report.exists():
            try:
                write_run_report(path)
            except DigitlabError:
                return {"name": Path(ref).name, "href": None}
        return {"name": Path(ref).name, "href": relative_href(report, folder)}
    return {"name": Path(ref).name, "href": None}


def _experiment_pictures(folder: Path, plots: tuple[str, ...]) -> list[dict[str, str]]:
    """Every PNG in the folder: first those the record's `plots` names, in its order, then
    the rest by name; those experiments/plots.py draws with their own title and caption."""
    names = [Path(name).name for name in plots]  # only files inside the folder
    names += [p.name for p in sorted(folder.glob("*.png")) if p.name not in names]
    pictures, seen = [], set()
    for name in names:
        path = folder / name
        if name in seen or path.suffix.lower() != ".png" or not path.is_file():
            continue
        seen.add(name)
        default = (path.stem.replace("_", " ").replace("-", " ").capitalize(), "")
        pictures.append(figure(path, *lesson.PLOT_TITLES.get(path.stem, default)))
    return pictures


# ---------------------------------------------------------------------------- either, by name
def write_report(ref: str | Path, runs_dir: Path | None = None) -> Path:
    """(Re)write the report.html of a run or an experiment, named as a user would name it.

    `ref` is an experiment folder (holding experiment.json), an experiment's name in
    `RUNS_DIR/experiments/`, or a run: its path, a name `load_run` takes, or "latest".

    Raises:
        RunError: nothing of that name, an ambiguous name, or it can't be read.
    """
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    experiments = runs_dir / EXPERIMENTS_FOLDER
    for folder in (Path(ref), experiments / str(ref)):
        if is_file(folder / EXPERIMENT_FILE):
            return write_experiment_report(folder, runs_dir)
    if str(ref) == "latest" or find_run(ref, runs_dir) is not None:
        return write_run_report(load_run(ref, runs_dir))
    raise RunError(
        f"'{ref}' is neither a run nor an experiment (looked in ., {runs_dir}, {experiments} "
        f"and {experiments}/*/{RUNS_FOLDER}); see `{runs_command(runs_dir)}`"
    )
