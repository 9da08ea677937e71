"""report.html of a run and of an experiment: one offline page each, from Jinja2 templates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from digitlab import plots
from digitlab.errors import DigitlabError, RunError
from digitlab.files import MAX_JSON_BYTES, is_dir, is_file, read_capped, write_text
from digitlab.report._render import (
    figure,
    flatten,
    layer_text,
    number,
    percent,
    relative_href,
    render,
)
from digitlab.runs import (
    Run,
    default_runs_dir,
    has_config,
    load_run,
    read_run,
    run_name,
)
from digitlab.schema import RunConfig

REPORT_FILE = "report.html"
EXPERIMENT_FILE = "experiment.json"
# The pictures a run folder holds: the same names as digitlab.evaluation's (which imports
# Keras; a report must not), checked equal by tests/test_report.py.
CURVES_PNG = "training_curves.png"
CONFUSION_PNG = "confusion_matrix.png"
MISCLASSIFIED_PNG = "misclassified.png"
NORMALIZED_PNG = "confusion_matrix_normalized.png"


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
    )
    return write_text(run.path / REPORT_FILE, html)


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
        ("seed", run.config.seed),
    ]
    rows += [(f"versions.{k}", v) for k, v in run.config.versions.items()]
    return [(name, "–" if value is None else value) for name, value in rows]


def _summary(run: Run) -> list[tuple[str, str]]:
    metrics = run.metrics
    rows = [
        ("status", run.status),
        ("epochs", str(run.epochs_done)),
        ("test accuracy", percent(metrics.test_accuracy)),
        ("test loss", number(metrics.test_loss)),
        ("test errors", number(metrics.test_errors)),
        ("training time", f"{metrics.train_seconds:.1f} s"),
    ]
    if metrics.epoch_seconds:
        mean = sum(metrics.epoch_seconds) / len(metrics.epoch_seconds)
        rows.append(("seconds per epoch", f"{mean:.2f} s"))
    for key in run.history:
        if run.history[key]:
            rows.append((f"final {key}", number(run.history[key][-1])))
    return rows


def _class_rows(run: Run) -> list[dict[str, Any]]:
    """The per-class report (precision, recall, F1, support), classes first, then averages."""
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
                "precision": values.get("precision"),
                "recall": values.get("recall"),
                "f1": values.get("f1-score"),
                "support": values.get("support"),
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
def read_experiment(folder: Path) -> dict[str, Any]:
    """The experiment.json of an experiment folder, as a dict.

    Raises:
        RunError: missing, over 10 MB, not JSON, or not a JSON object.
    """
    path = folder / EXPERIMENT_FILE
    try:
        data = json.loads(read_capped(path, MAX_JSON_BYTES, RunError))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunError(f"{path} is not valid JSON ({exc}); run the experiment again") from None
    if not isinstance(data, dict):
        raise RunError(f"{path} must hold a JSON object with 'name' and 'variants'")
    return data


def write_experiment_report(folder: Path, runs_dir: Path | None = None) -> Path:
    """Write `report.html` into an experiment folder and return its path.

    The page holds the question, the conclusion, the budget, the table of variants, every
    PNG in the folder, and links to its runs' reports (a run without one gets it written).
    Runs are looked up as given, in the folder and its `runs/`, in `runs_dir`, and in the
    runs folder that holds `experiments/` (the folder's grandparent).

    Raises:
        RunError: experiment.json is missing or unreadable, or a picture is unreadable.
        WriteError: the page can't be written.
    """
    folder = Path(folder)
    data = read_experiment(folder)
    roots = [
        folder,
        folder / "runs",  # where `digitlab experiment` trains its runs
        *([Path(runs_dir)] if runs_dir is not None else []),
        folder.parent.parent,
    ]
    variants = [_variant_row(v, folder, roots) for v in _list(data.get("variants"))]
    budget = data.get("budget")
    html = render(
        "experiment.html.j2",
        title=f"Experiment {data.get('name') or folder.name}",
        name=str(data.get("name") or folder.name),
        folder=folder.name,
        question=_text(data.get("question")),
        description=_text(data.get("description")),
        anchor=_text(data.get("anchor")),
        statistics=_text(data.get("statistics")),
        details=[
            (label, _text(data[key]))
            for key, label in (
                ("baseline", "baseline variant"),
                ("learning_rate_policy", "learning-rate policy"),
                ("wall_seconds", "wall-clock seconds"),
            )
            if data.get(key) not in (None, "")
        ],
        conclusion=[_text(s) for s in _list(data.get("conclusion"))],
        status=str(data.get("status") or ""),
        seeds=_text(data.get("seeds")),
        budget=list(flatten(budget).items()) if isinstance(budget, dict) else [],
        variants=variants,
        figures=_experiment_pictures(folder, data),
    )
    return write_text(folder / REPORT_FILE, html)


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value.strip() else []
    return list(value) if isinstance(value, list | tuple) else [value]


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return json.dumps(value) if isinstance(value, dict) else str(value)


def _summary_of(value: Any) -> dict[str, Any]:
    """A figure across seeds, {"mean", "std", "values"}, from that or from a plain number."""
    summary = value if isinstance(value, dict) else {"mean": value}
    numbers = [v for v in _list(summary.get("values")) if isinstance(v, int | float)]
    return {"mean": summary.get("mean"), "std": summary.get("std"), "values": numbers}


def _variant_row(variant: Any, folder: Path, roots: list[Path]) -> dict[str, Any]:
    if not isinstance(variant, dict):
        variant = {"name": str(variant)}
    spec = variant.get("spec")
    return {
        "name": str(variant.get("name", "?")),
        "description": _text(variant.get("description")),
        "spec": ", ".join(f"{k}={v}" for k, v in flatten(spec).items())
        if isinstance(spec, dict)
        else _text(spec),
        "batch_size": variant.get("batch_size"),
        "learning_rate": variant.get("learning_rate"),
        "accuracy": _summary_of(variant.get("test_accuracy")),
        "train_loss": _summary_of(variant.get("final_train_loss")),
        "val_loss": _summary_of(variant.get("final_val_loss")),
        "gap": _summary_of(variant.get("generalization_gap")),
        "seconds": _summary_of(variant.get("seconds")),
        "updates": variant.get("updates"),
        "runs": [_run_link(ref, folder, roots) for ref in _list(variant.get("runs"))],
    }


def _run_link(ref: Any, folder: Path, roots: list[Path]) -> dict[str, str | None]:
    """A run of the experiment: its name, and a relative link to its report.html (written
    now if the run lacks one), or None when the run can't be found or read."""
    ref = str(ref)
    candidates = [Path(ref)] if Path(ref).is_absolute() else [root / ref for root in roots]
    for path in candidates:
        if not has_config(path):
            continue
        report = path / REPORT_FILE
        if not report.exists():
            try:
                write_run_report(path)
            except DigitlabError:
                return {"name": Path(ref).name, "href": None}
        return {"name": Path(ref).name, "href": relative_href(report, folder)}
    return {"name": Path(ref).name, "href": None}


def _experiment_pictures(folder: Path, data: dict[str, Any]) -> list[dict[str, str]]:
    """Every PNG in the folder: first those experiment.json's "plots" names (a file name, or
    {"file", "title", "caption"}), in its order, then the rest by name."""
    listed: list[tuple[str, str, str]] = []
    for item in _list(data.get("plots")):
        if isinstance(item, str):
            listed.append((item, "", ""))
        elif isinstance(item, dict) and isinstance(item.get("file"), str):
            listed.append((item["file"], _text(item.get("title")), _text(item.get("caption"))))
    names = {Path(name).name for name, _, _ in listed}
    listed += [(p.name, "", "") for p in sorted(folder.glob("*.png")) if p.name not in names]
    pictures, seen = [], set()
    for name, title, caption in listed:
        path = folder / Path(name).name  # only files inside the folder
        if path.name in seen or path.suffix.lower() != ".png" or not path.is_file():
            continue
        seen.add(path.name)
        title = title or path.stem.replace("_", " ").replace("-", " ").capitalize()
        pictures.append(figure(path, title, caption))
    return pictures


# ---------------------------------------------------------------------------- either, by name
def write_report(ref: str | Path, runs_dir: Path | None = None) -> Path:
    """(Re)write the report.html of a run or an experiment, named as a user would name it.

    `ref` is an experiment folder (holding experiment.json), an experiment's name in
    `RUNS_DIR/experiments/`, or a run: its path, its name in `runs_dir`, or "latest".

    Raises:
        RunError: nothing of that name, or it can't be read.
    """
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    for folder in (Path(ref), runs_dir / "experiments" / str(ref)):
        if is_file(folder / EXPERIMENT_FILE):
            return write_experiment_report(folder, runs_dir)
    if str(ref) == "latest" or is_dir(Path(ref)) or is_dir(runs_dir / str(ref)):
        return write_run_report(load_run(ref, runs_dir))
    raise RunError(
        f"'{ref}' is neither a run nor an experiment (looked in ., {runs_dir} and "
        f"{runs_dir / 'experiments'}); see `digitlab runs`"
    )
