"""A run, read from its directory: `Run`, `read_run`, `load_run`, `scan_runs`, `list_runs`.

The run's files are read here and only here, through the schema's models (`RunConfig`,
`Metrics`), so a run folder someone else made, edited or broke becomes one clear `RunError`
naming the file and the field, never a traceback (see the package docstring).

Runs live in a runs folder, and each experiment's in `RUNS_DIR/experiments/<folder>/runs/`.
`find_run` is the one resolver of the names commands take, and `run_ref` the name a listing
shows, so every run listed can be named back.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.errors import RunError
from digitlab.files import MAX_MODEL_BYTES, check_regular, is_dir
from digitlab.runs.folder import (
    MODEL_FILE,
    has_config,
    read_confidence_stats,
    read_config,
    read_folder_history,
    read_inspect_summary,
    read_metrics,
    write_run_files,
)
from digitlab.schema import DatasetRecord, Metrics, Preprocessing, RunConfig, Spec

# An experiment's runs: RUNS_DIR/experiments/<timestamp>-<name>/runs/<run> (the folder layout
# `digitlab.experiments.record` writes; named here so that runs can be found without it).
EXPERIMENTS_FOLDER = "experiments"
EXPERIMENT_RUNS_FOLDER = "runs"


def default_runs_dir() -> Path:
    """Where runs live: `$DIGITLAB_RUNS_DIR`, else `./runs`."""
    return Path(os.environ.get("DIGITLAB_RUNS_DIR", "runs"))


def runs_command(runs_dir: str | Path | None = None) -> str:
    """The `digitlab runs` command that lists `runs_dir` (error hints name it)."""
    if runs_dir is None or Path(runs_dir) == default_runs_dir():
        return "digitlab runs"
    return f"digitlab runs --runs-dir {shlex.quote(str(runs_dir))}"


@dataclass
class Run:
    """A finished (or interrupted) training run, read from its directory.

    Its typed fields come from `config.json` and `metrics.json` (see `digitlab.schema`).
    The Keras model is loaded on first use of `model`, so listing runs stays cheap.
    """

    path: Path
    config: RunConfig
    history: dict[str, list[float]] = field(default_factory=dict)
    metrics: Metrics = field(default_factory=Metrics)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def created(self) -> datetime:
        return self.config.created

    @property
    def status(self) -> str:
        """ "complete", or "interrupted" (Ctrl-C) with the weights learned so far."""
        return self.config.status

    @property
    def epochs_done(self) -> int:
        return self.config.epochs_done

    @property
    def spec(self) -> Spec:
        return self.config.spec

    @property
    def dataset(self) -> DatasetRecord:
        return self.config.dataset

    @property
    def class_names(self) -> list[str]:
        return list(self.config.dataset.class_names)

    @property
    def preprocessing(self) -> Preprocessing:
        return self.config.preprocessing

    @property
    def image_shape(self) -> tuple[int, int]:
        """Height and width of the images the run's network reads (28×28 for MNIST)."""
        return self.config.spec.image_shape

    @property
    def thresholds(self) -> dict[str, float]:
        """Calibrated confidence thresholds stored at training time ({} for older runs)."""
        return dict(self.config.thresholds)

    @cached_property
    def model(self):
        """The trained Keras model, with its optimizer state.

        Raises:
            RunError: model.keras is missing, not a regular file, over 2 GB, or cannot be
                loaded safely (Keras's safe mode refuses code inside a model file).
        """
        import keras

        import digitlab.model  # noqa: F401  registers the custom layers and metrics

        path = self.path / MODEL_FILE
        check_regular(path, MAX_MODEL_BYTES, RunError)
        try:
            return keras.saving.load_model(path, safe_mode=True)
        except Exception as exc:  # Keras raises many kinds on a crafted or damaged file
            detail = " ".join(str(exc).split())[:160]
            raise RunError(
                f"run {self.path}: {MODEL_FILE} could not be loaded safely ({detail}); "
                "train the run again or use another"
            ) from None

    @cached_property
    def _predict_proba(self):
        from digitlab import forward

        check_regular(self.path / MODEL_FILE, MAX_MODEL_BYTES, RunError)
        numpy_forward = forward.load_forward(self.path / MODEL_FILE)
        if numpy_forward is not None:
            return forward.probability_function(numpy_forward, self.spec)
        from digitlab.model import probability_function

        return probability_function(self.model, self.spec)

    def network_images(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N×28×28 or N×784) as the run's networks read them: with each
        frame's background levelled (`background.level_background`) when the run's
        preprocessing says so, else as they are. Same shape as given."""
        if not self.preprocessing.level_background:
            return images
        from digitlab.background import level_background

        images = np.asarray(images)
        shaped = images.reshape((-1, *self.image_shape))
        return level_background(shaped).reshape(images.shape)

    def set_level_background(self, level: bool) -> None:
        """Read pixels levelled (`network_images`) or not from now on; the config file
        records it with the next `store_calibration` (as `digitlab calibrate` does)."""
        preprocessing = self.preprocessing.model_copy(update={"level_background": level})
        self.config = self.config.model_copy(update={"preprocessing": preprocessing})

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for uint8 images shaped N×28×28 (or N×784), 0–255.

        The run's own preprocessing is applied (`network_images`, then the spec's scaling),
        so callers pass raw MNIST-style pixels. The forward pass runs in NumPy, without Keras
        or JAX (`forward.load_forward`), when it knows every layer; otherwise Keras loads the
        model and the pass is compiled on first use (`model.probability_function`).
        """
        return self._predict_proba(self.network_images(images))

    def confidence_stats(self) -> dict[str, np.ndarray]:
        """What the confidence verdict measures with: the verifier and companion networks'
        weights (or, for a run calibrated before issue 22, the class directions of its PCA
        check).

        Raises:
            RunError: the run has none, or its file is damaged (the message says how to
                write it again: `digitlab calibrate RUN`).
        """
        return read_confidence_stats(self.path)

    def store_calibration(self, thresholds: dict[str, float], stats: dict[str, np.ndarray]) -> None:
        """Keep calibrated confidence thresholds and the verifiers' and companion's weights.

        The weights are written first and the config last, each atomically, so a kill
        leaves either the old run or the calibrated one. `run.thresholds` returns the new ones.
        """
        config = self.config.model_copy(update={"thresholds": thresholds})
        write_run_files(self.path, stats=stats, config=config)
        self.config = config

    def inspect_summary(self) -> dict[str, Any] | None:
        """`digitlab inspect`'s summary of this run (per-layer statistics), None if it has none.

        Raises:
            RunError: the summary is there but unreadable.
        """
        return read_inspect_summary(self.path)

    def __repr__(self) -> str:
        """One line: name, dataset, test accuracy, status (the config is in `run.config`)."""
        from digitlab.display import accuracy_text

        accuracy = accuracy_text(self.metrics.test_accuracy)
        return f"<Run {self.name}: {self.dataset.name}, test accuracy {accuracy}, {self.status}>"

    def _repr_html_(self) -> str:
        """Jupyter's inline view: key figures, training curves and confusion matrix (PNG data
        URIs drawn from the run folder's pictures, or from its history and metrics)."""
        from digitlab import display, plots

        metrics, history = self.metrics, self.history
        rows = [
            ("path", str(self.path)),
            ("network", self.spec.name),
            ("dataset", self.dataset.name),
            ("status", self.status),
            ("epochs", self.epochs_done),
            ("test accuracy", display.accuracy_text(metrics.test_accuracy)),
            ("test loss", display.number(metrics.test_loss)),
        ]
        if history.get("val_accuracy"):
            rows.append(("validation accuracy", display.percent(history["val_accuracy"][-1])))
        if history.get("val_loss"):
            rows.append(("validation loss", display.number(history["val_loss"][-1])))
        rows.append(("training time", f"{metrics.train_seconds:.1f} s"))
        curves = display.file_figure(self.path / "training_curves.png", "Training curves")
        if curves is None and history:
            curves = display.drawn_figure(
                lambda path: plots.save_training_curves(history, path), "Training curves"
            )
        cm = metrics.confusion_matrix
        confusion = display.file_figure(self.path / "confusion_matrix.png", "Confusion matrix")
        if confusion is None and cm is not None:
            confusion = display.drawn_figure(
                lambda path: plots.save_confusion_matrix(np.asarray(cm), self.class_names, path),
                "Confusion matrix",
            )
        figures = [fig for fig in (curves, confusion) if fig is not None]
        return display.card(f"Run {self.name}", rows, figures)


@dataclass(frozen=True)
class UnreadableRun:
    """A folder that looks like a run (it has config.json) but can't be read, and why."""

    path: Path
    reason: str
    status: str = "unreadable"

    @property
    def name(self) -> str:
        return self.path.name


# ------------------------------------------------------------------------------------ reading
def read_run(path: str | Path, config: RunConfig | None = None) -> Run:
    """The run in folder `path`.

    Args:
        config: the run's config, for a folder that doesn't hold it yet (a run being
            staged, whose config.json is written last); read from the folder if None.

    Raises:
        RunError: not a run folder, or one of its files is unreadable; the message names
            the file and the field.
    """
    path = Path(path)
    if config is None:
        config = read_config(path)
    classes = len(config.dataset.class_names)
    history, metrics = read_folder_history(path), read_metrics(path, classes)
    return Run(path=path, config=config, history=history, metrics=metrics)


def load_run(ref: str | Path, runs_dir: str | Path | None = None) -> Run:
    """Open a run by path, by name (see `find_run`), or as "latest" (the newest readable run
    in `runs_dir`, outside experiments).

    Raises:
        RunError: no such run, an ambiguous name, or not a complete, readable run directory.

    Example:
        >>> import digitlab
        >>> run = digitlab.load_run("latest")
        >>> run.metrics.test_accuracy, run.history["loss"][-1]
    """
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if str(ref) == "latest":
        runs = list_runs(runs_dir)
        if not runs:
            raise RunError(f"no readable runs in {runs_dir}; train one with `digitlab train`")
        return runs[0]
    path = find_run(ref, runs_dir)
    if path is None:
        raise RunError(
            f"run '{ref}' not found (looked in ., {runs_dir} and "
            f"{runs_dir / EXPERIMENTS_FOLDER}/*/{EXPERIMENT_RUNS_FOLDER}); "
            f"see `{runs_command(runs_dir)}`"
        )
    return read_run(path)


def find_run(ref: str | Path, runs_dir: str | Path | None = None) -> Path | None:
    """The folder a run's name or path names, or None if none does. In this order:

    - a path (absolute, or from the current folder);
    - a name in `runs_dir`;
    - an experiment's run, as `EXPERIMENT/RUN` (its folder in RUNS_DIR/experiments, the
      run's folder in its runs/), or as `RUN` alone when one experiment only has it.

    Raises:
        RunError: `RUN` names runs of several experiments; the message lists them.
    """
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    for path in (Path(ref), runs_dir / str(ref)):
        if is_dir(path):
            return path
    found = _experiment_runs_named(str(ref), runs_dir)
    if len(found) > 1:
        names = ", ".join(_experiment_run_name(path) for path in found)
        raise RunError(f"run '{ref}' is in {len(found)} experiments: name one of {names}")
    return found[0] if found else None


def _experiment_runs_named(name: str, runs_dir: Path) -> list[Path]:
    """The experiment run folders `name` (RUN or EXPERIMENT/RUN) names."""
    parts = name.split("/")
    if len(parts) > 2 or any(part in ("", "..") or part.startswith(".") for part in parts):
        return []
    if len(parts) == 2:
        folders = [runs_dir / EXPERIMENTS_FOLDER / parts[0]]
    else:
        folders = experiment_folders(runs_dir)
    runs = (folder / EXPERIMENT_RUNS_FOLDER / parts[-1] for folder in folders)
    return [run for run in runs if is_dir(run)]


def _experiment_run_name(path: Path) -> str:
    return f"{path.parent.parent.name}/{path.name}"


def run_ref(path: str | Path, runs_dir: str | Path | None = None) -> str:
    """The shortest name `find_run` takes back to the run folder `path`: its folder name for
    a run in `runs_dir`, and for an experiment's run its folder name if no other run has it,
    else `EXPERIMENT/RUN`; the path itself for a run elsewhere."""
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    path = Path(path)
    experiments = runs_dir / EXPERIMENTS_FOLDER
    if path.parent.name != EXPERIMENT_RUNS_FOLDER or not _same(
        path.parent.parent.parent, experiments
    ):
        return path.name if _same(path.parent, runs_dir) else str(path)
    for name in (path.name, _experiment_run_name(path)):
        try:
            found = find_run(name, runs_dir)
        except RunError:  # in several experiments: the longer name
            continue
        if found is not None and _same(found, path):
            return name
    return str(path)


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def experiment_folders(runs_dir: str | Path | None = None) -> list[Path]:
    """The experiment folders in RUNS_DIR/experiments that hold runs, newest first (their
    names begin with a timestamp); hidden (staging) folders are not experiments.

    Raises:
        RunError: RUNS_DIR/experiments exists but can't be listed.
    """
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    parent = runs_dir / EXPERIMENTS_FOLDER
    if not is_dir(parent):
        return []
    try:
        entries = sorted(parent.iterdir(), reverse=True)
    except OSError as exc:
        raise RunError(f"cannot list {parent}: {exc.strerror or exc}") from None
    return [
        path
        for path in entries
        if not path.name.startswith(".") and is_dir(path / EXPERIMENT_RUNS_FOLDER)
    ]


def scan_runs(runs_dir: str | Path | None = None) -> list[Run | UnreadableRun]:
    """Every run folder in `runs_dir`: readable runs newest first, then unreadable ones with
    the reason. Folders without config.json and hidden (staging) folders are not runs."""
    runs_dir = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    if not is_dir(runs_dir):
        return []
    good: list[Run] = []
    bad: list[UnreadableRun] = []
    try:
        entries = sorted(runs_dir.iterdir())
    except OSError as exc:
        raise RunError(f"cannot list {runs_dir}: {exc.strerror or exc}") from None
    for path in entries:
        if path.name.startswith(".") or not is_dir(path) or not has_config(path):
            continue
        try:
            good.append(read_run(path))
        except RunError as exc:
            bad.append(UnreadableRun(path, str(exc)))
    good.sort(key=lambda run: _timestamp(run.created), reverse=True)
    return [*good, *bad]


def _timestamp(moment: datetime) -> float:
    """Seconds since the epoch; naive times (ours) are local, so mixed ones still sort."""
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return 0.0


def list_runs(runs_dir: str | Path | None = None) -> list[Run]:
    """Every readable run in `runs_dir`, newest first (`scan_runs` also lists broken ones)."""
    return [run for run in scan_runs(runs_dir) if isinstance(run, Run)]
