"""Train a network and write its run directory: prepare the data, build, fit, evaluate, save.

Reads like the notebook: load MNIST, flatten and scale, build the Sequential model, compile,
fit in mini-batches, evaluate on the test digits. The fit is `fastfit.fit`: Keras's own
train step, an epoch compiled as one XLA program (1.5–2× faster than `model.fit` on a CPU).
What the notebook lacks is added around that story: a seed for repeatable runs, early
stopping, and Ctrl-C that keeps what was learned as a run `digitlab train --resume RUN`
continues.
"""

from __future__ import annotations

import math
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import keras
import numpy as np

from digitlab import exposure, fastfit
from digitlab._version import __version__
from digitlab.background import level_background, levels_background
from digitlab.confidence import calibration_notice, calibration_split
from digitlab.config import with_overrides
from digitlab.data import class_names as dataset_class_names
from digitlab.data import load_dataset, load_dataset_files
from digitlab.errors import DivergedError, RunError, SpecError
from digitlab.evaluation import evaluate_model, loss_targets, write_pictures
from digitlab.events import EpochEvents
from digitlab.interrupts import stop_on_signals
from digitlab.mechanisms.recorder import MechanismRecorder
from digitlab.model import PIXEL_SCALE, build_model, compile_model, probability_function
from digitlab.report import write_run_report
from digitlab.runs import (
    EVENTS_DIR,
    Run,
    check_writable,
    claim_run_path,
    default_runs_dir,
    load_run,
    read_run,
    staged_run,
    write_run_files,
)
from digitlab.schema import RunConfig, Spec


class _EpochLog(keras.callbacks.Callback):
    """Keeps the per-epoch logs and times, which survive an interrupted `fit`."""

    def __init__(self, history: dict[str, list[float]] | None = None):
        super().__init__()
        self.history = {key: list(values) for key, values in (history or {}).items()}
        self.epoch_seconds: list[float] = []
        self.recorders: tuple[MechanismRecorder, ...] = ()  # mechanisms.json's (issue 21)

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._start)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))

    @property
    def epochs_done(self) -> int:
        return len(self.history.get("loss", []))

    @property
    def mechanisms(self) -> dict[str, Any] | None:
        """What the recorder recorded, for mechanisms.json (None: not recorded)."""
        return self.recorders[0].values if self.recorders else None


def _versions() -> dict[str, str]:
    import jax

    return {
        "digitlab": __version__,
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "jax": jax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _limited(spec: Spec, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The training digits the spec uses (its first `train_samples`, or all)."""
    n = spec.train.train_samples
    return (x, y) if n is None else (x[:n], y[:n])


def _prepare_training_data(spec: Spec, x: np.ndarray, y: np.ndarray, num_classes: int):
    """Flatten the images (still uint8: fastfit scales each batch by 1/255 as it trains, the
    same float32 values `prepare_inputs` gives, at a quarter of the memory); one-hot the
    labels where the loss wants them."""
    x, y = _limited(spec, x, y)
    return x.reshape((-1, *spec.input_shape)), loss_targets(y, spec, num_classes)


def _fit(
    model: keras.Model,
    spec: Spec,
    x: np.ndarray,
    y: np.ndarray,
    log: _EpochLog,
    verbose: int | None,
    extra: tuple[keras.callbacks.Callback, ...] = (),
    events: EpochEvents | None = None,
) -> str:
    """Fit until the configured epoch, early stop or interrupt; returns the run's status."""
    # Callbacks that add figures to the epoch's logs (`adds_to_logs`) run before `log`, which
    # keeps them; every other one last, so an epoch one of them interrupts is kept and logged.
    adding = [c for c in extra if getattr(c, "adds_to_logs", False)]
    callbacks: list[keras.callbacks.Callback] = [
        *adding,
        log,
        *log.recorders,  # activations, gradients, update ratios, noise scale (issue 21)
        fastfit.StopOnRequest(),
        keras.callbacks.TerminateOnNaN(),
        *([events] if events is not None else []),  # TensorBoard: once per epoch
        *(c for c in extra if c not in adding),
    ]
    if spec.train.early_stopping:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=spec.train.early_stopping, restore_best_weights=True
            )
        )
    if verbose is None:  # a live bar on a terminal, one line per epoch in logs, CI, Jupyter
        verbose = 1 if sys.stdout.isatty() and "ipykernel" not in sys.modules else 2
    x, y, validation = exposure.fit_data(x, y, spec.train)  # with non-digits, if asked
    try:
        with stop_on_signals():  # Ctrl-C and SIGTERM stop after the running chunk of steps
            fastfit.fit(
                model,
                x,
                y,
                batch_size=spec.train.batch_size,
                epochs=spec.train.epochs,
                initial_epoch=log.epochs_done,
                validation_split=spec.train.validation_split,
                validation_data=validation,
                callbacks=callbacks,
                verbose=verbose,
                seed=spec.train.seed,
                input_scale=PIXEL_SCALE,
            )
    except KeyboardInterrupt:
        return "interrupted"
    if not all(math.isfinite(loss) for loss in log.history.get("loss", [])):  # TerminateOnNaN
        rate = spec.train.learning_rate or "the optimizer's default"
        raise DivergedError(
            f"training diverged: the loss became NaN or infinite in epoch {log.epochs_done}; "
            f"nothing was saved. Lower the learning rate (it was {rate}) or scale the inputs"
        )
    return "complete"


def _save_run(
    path: Path,
    model: keras.Model,
    spec: Spec,
    dataset: dict[str, Any],
    log: _EpochLog,
    status: str,
    test: tuple[np.ndarray, np.ndarray],
    train_seconds: float,
    previous: RunConfig | None = None,
    pictures: bool = True,
    events: EpochEvents | None = None,
    calibrate_on: tuple[np.ndarray, np.ndarray] | None = None,
    claimed: bool = False,
) -> Run:
    """Write the run directory atomically; evaluate and draw pictures if training finished.

    A finished run is also calibrated (`confidence.calibrate`) when `calibrate_on` holds the
    dataset's training (images, labels): `confidence.calibration_split` takes the digits the
    run trained on and the test's first half; the run keeps the thresholds and class directions.
    With `claimed`, `path` is the empty folder `claim_run_path` made for a new run.

    Raises:
        RunError: the run can't be written (a full or read-only disk); the trained model is
            then saved in a rescue folder the message names.
    """
    config = _run_config(spec, dataset, log, status, previous)
    metrics: dict[str, Any] = {
        "epochs": log.epochs_done,
        "train_seconds": round(train_seconds, 3),
        "epoch_seconds": [round(s, 4) for s in log.epoch_seconds],
    }
    try:
        with staged_run(path, claimed=claimed) as staging:
            write_run_files(staging, model=model, history=log.history, mechanisms=log.mechanisms)
            if status == "complete":
                metrics |= _evaluate(staging, model, spec, dataset, log, test, pictures)
                if calibrate_on is not None:
                    calibration = calibration_split(
                        *_limited(spec, *calibrate_on), test, spec.train.validation_split
                    )
                    config = _calibrated(model, spec, config, calibration, staging)
            write_run_files(staging, metrics=metrics)
            if events is not None:  # RUN/tensorboard/: the epochs, the config, the pictures
                events.write(
                    staging / EVENTS_DIR, step=log.epochs_done, mechanisms=log.mechanisms,
                    config_text=config.model_dump_json(indent=2), previous=path / EVENTS_DIR,
                    pictures=staging if status == "complete" else None,
                )  # fmt: skip
            _write_report(staging, config) if pictures else None  # (it draws the pictures)
            write_run_files(staging, config=config)  # last: it marks the run complete
    except OSError as exc:
        rescue = _rescue(model, config)
        raise RunError(
            f"could not write the run {path}: {exc.strerror or exc}. "
            f"The trained model is kept in {rescue}; free some space or pass another --runs-dir"
        ) from None
    return read_run(path)


def _write_report(staging: Path, config: RunConfig) -> None:
    """The run's report.html; a report that fails (a template bug, a picture that can't be
    drawn) costs the report, never the trained run: one line says how to write it later."""
    try:
        write_run_report(staging, config=config)
    except OSError:
        raise  # a full or read-only disk: the caller rescues the model
    except Exception as exc:  # the run matters more than its page
        print(
            f"warning: report.html could not be written ({type(exc).__name__}: {exc}); the run "
            f"is saved: write it later with `digitlab report {config.name}`",
            file=sys.stderr,
        )


def _run_config(
    spec: Spec, dataset: dict[str, Any], log: _EpochLog, status: str, previous: RunConfig | None
) -> RunConfig:
    """What the run's config records: the spec, preprocessing, dataset, seed and versions."""
    now = datetime.now()
    return RunConfig.model_validate(
        {
            "name": spec.name,
            "created": previous.created if previous is not None else now,
            "updated": now,
            "status": status,
            "epochs_done": log.epochs_done,
            "spec": spec,
            "preprocessing": {
                "input": spec.input,
                "shape": spec.input_shape,
                "scale": PIXEL_SCALE,
                "level_background": levels_background(spec.train.dataset),
            },
            "dataset": dataset,
            "seed": spec.train.seed,
            "versions": _versions(),
        }
    )


def _evaluate(folder: Path, model, spec, dataset, log, test, pictures: bool) -> dict[str, Any]:
    """The test figures of a finished run; its pictures drawn into `folder` if asked."""
    x_test, y_test = test
    if levels_background(spec.train.dataset):  # as the run will read them (MNIST's: unchanged)
        x_test = level_background(x_test)
    evaluation = evaluate_model(model, spec, x_test, y_test, dataset["class_names"])
    if pictures:
        write_pictures(folder, evaluation, log.history, test[0])
    return evaluation.to_dict()


def _calibrated(model, spec, config, calibration, folder: Path) -> RunConfig:
    """Calibrate the confidence verdict; keep its verifiers' and companion's weights in `folder`."""
    from digitlab.confidence import calibrate

    classes = len(config.dataset.class_names)
    level = config.preprocessing.level_background
    network = probability_function(model, spec)

    def predict(images: np.ndarray) -> np.ndarray:  # as `Run.predict_proba` will answer
        return network(level_background(images) if level else images)

    try:
        thresholds, stats = calibrate(predict, *calibration, classes, config.dataset.name, level)
    except RunError:  # too few correct held-out digits (a tiny or weak run): still a run,
        return config  # saved without thresholds, like a run from before calibration
    write_run_files(folder, stats=stats)
    return config.model_copy(update={"thresholds": thresholds})


def _rescue(model: keras.Model, config: RunConfig) -> Path | str:
    """Save the model and its config somewhere safe when the run folder can't take them:
    `$TMPDIR/digitlab-rescued-*` (the system's temporary folder)."""
    folder = Path(tempfile.mkdtemp(prefix=f"digitlab-rescued-{datetime.now():%Y%m%d-%H%M%S}-"))
    try:
        write_run_files(folder, model=model, config=config)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
        return "nowhere: the temporary folder is full too"
    return folder


PROGRESS = ("auto", "bar", "epoch", "none")


def progress_verbosity(progress: str | bool | None, verbose: int | None = None) -> int | None:
    """Keras's verbosity for a `progress` choice; None (or "auto") keeps `verbose`.

    - "epoch" (or True): one plain line per epoch (Keras's verbose=2), which reads well in
      Jupyter, logs and CI: no carriage-return bar that a notebook would smear;
    - "bar": a live progress bar on a terminal (Keras's verbose=1); in Jupyter, where
      that bar's backspaces and carriage returns don't render, one line per epoch instead;
    - "none" (or False): silent;
    - "auto" or None: `verbose`, and if that is None too, a bar on a terminal, else lines.

    Raises:
        SpecError: an unknown choice.
    """
    if progress is None or progress == "auto":
        return verbose
    if progress is True or progress == "epoch":
        return 2
    if progress is False or progress == "none":
        return 0
    if progress == "bar":
        return 1 if sys.stdout.isatty() and "ipykernel" not in sys.modules else 2
    raise SpecError(
        f"progress must be one of {', '.join(PROGRESS)} (or True/False), got {progress!r}"
    )


def train(
    spec: Spec,
    *,
    runs_dir: str | Path | None = None,
    name: str | None = None,
    data_dir: str | Path | None = None,
    progress: str | bool | None = None,
    verbose: int | None = None,
    callbacks: tuple[keras.callbacks.Callback, ...] = (),
    pictures: bool = True,
    calibrate: bool = True,
    mechanisms: bool | None = None,
) -> Run:
    """Train the network `spec` describes and write a run directory.

    Args:
        spec: layers and training config, e.g. `get_preset("seed")` or `resolve_spec(...)`.
        runs_dir: parent folder of the run (default `$DIGITLAB_RUNS_DIR` or `./runs`); it is
            checked to be writable before any training.
        name: the run's name after its timestamp (default: the spec's name).
        data_dir: a folder holding the dataset files, as for `load_dataset`.
        progress: "epoch" (one line per epoch, the notebook-friendly view), "bar" (a live bar
            on a terminal), "none", or "auto"/None (use `verbose`); see `progress_verbosity`.
        verbose: Keras's verbosity; None picks a progress bar on a terminal, else one line
            per epoch (in Jupyter always lines).
        callbacks: more Keras callbacks for the fit (e.g. an experiment's progress and
            activation statistics); they see the model after every epoch.
        pictures: draw the confusion matrix, misclassified gallery and curves PNGs and write
            report.html (default True; an experiment's runs skip them, ~3 s a run: the
            experiment's report writes its runs' reports, `digitlab report RUN` any run's).
        calibrate: calibrate the confidence thresholds (default True; an experiment's runs
            skip it: it costs more than a short fit, and they are compared, not served).
        mechanisms: record activations, gradient norms, update ratios and the noise scale
            while training, into mechanisms.json (`mechanisms.recorder`; default: `pictures`).

    Returns:
        The `Run`: status "complete" with test metrics and pictures, or "interrupted" (Ctrl-C
        or SIGTERM) with the weights learned so far, to continue with `resume`.

    Raises:
        SpecError: a layer, loss, optimizer or metric is unknown or doesn't fit, the
            training diverged (the loss became NaN), or `progress` is unknown.
        RunError: the runs folder can't be written.
        DataError: the dataset cannot be fetched or verified.

    Example:
        >>> import digitlab
        >>> run = digitlab.train(digitlab.get_preset("seed"), progress="epoch")
        >>> run  # in Jupyter: key figures, training curves and confusion matrix inline
    """
    verbose = progress_verbosity(progress, verbose)
    if not isinstance(spec, Spec):
        raise SpecError(f"train() takes a Spec (see get_preset, resolve_spec), got {type(spec)}")
    classes = list(dataset_class_names(spec.train.dataset))
    keras.utils.set_random_seed(spec.train.seed)  # before building: it sets the initial weights
    model = build_model(spec, num_classes=len(classes))  # refuses a bad spec before any fetch
    compile_model(model, spec, num_classes=len(classes))
    runs_dir = check_writable(runs_dir if runs_dir is not None else default_runs_dir())

    files, ((x_train, y_train), test) = load_dataset_files(spec.train.dataset, data_dir=data_dir)
    x, y = _prepare_training_data(spec, x_train, y_train, len(classes))
    dataset = {
        "name": spec.train.dataset,
        "source": files.source,
        "sha256": files.sha256,
        "class_names": classes,
        "train_samples": len(x),
        "test_samples": len(test[1]),
    }

    log, events = _EpochLog(), EpochEvents(x, input_scale=PIXEL_SCALE)
    recorded = pictures if mechanisms is None else mechanisms  # issue 21: the training record
    log.recorders = MechanismRecorder.for_run(x, y, spec, recorded)
    start = time.perf_counter()
    status = _fit(model, spec, x, y, log, verbose, tuple(callbacks), events)
    path = claim_run_path(runs_dir, name or spec.name)  # one mkdir: no other writer gets it
    seconds = time.perf_counter() - start
    trained_on = len(fastfit.split(x, y, spec.train.validation_split)[0])  # as calibration
    notice = calibration_notice(spec.train.dataset, trained_on) if calibrate else None
    if notice and status == "complete" and verbose != 0:
        print(notice, flush=True)  # else minutes of silence, the first time
    return _save_run(
        path,
        model,
        spec,
        dataset,
        log,
        status,
        test,
        seconds,
        pictures=pictures,
        events=events,
        calibrate_on=(x_train, y_train) if calibrate else None,
        claimed=True,
    )


def resume(
    run: Run | str | Path,
    *,
    epochs: int | None = None,
    runs_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    progress: str | bool | None = None,
    verbose: int | None = None,
    callbacks: tuple[keras.callbacks.Callback, ...] = (),
    pictures: bool = True,
    calibrate: bool = True,
) -> Run:
    """Continue an interrupted run (or extend a finished one to more `epochs`) in place: the
    model with its optimizer state, from the first epoch not yet done, with the run's spec.
    The folder is replaced once the run is complete; a kill during the swap never loses it.

    Args:
        run: a `Run`, or its path, its name in `runs_dir`, or "latest".
        epochs: the total epochs to reach (default: the run's own).
        runs_dir: where to look the run up by name (default `$DIGITLAB_RUNS_DIR` or ./runs).
        progress, verbose, callbacks, pictures, calibrate: as for `train`.

    Raises:
        RunError: the run cannot be found, or it has already done `epochs` epochs.
        SpecError: `epochs` is not a whole number of at least 1, or `progress` is unknown.
    """
    verbose = progress_verbosity(progress, verbose)
    run = run if isinstance(run, Run) else load_run(run, runs_dir)
    check_writable(run.path.parent)
    spec = with_overrides(run.spec, epochs=epochs)
    done = run.epochs_done
    if done >= spec.train.epochs:
        raise RunError(
            f"run {run.name} has already trained {done} of {spec.train.epochs} epochs; "
            f"pass --epochs N with N > {done} to train further"
        )
    keras.utils.set_random_seed(spec.train.seed)  # fastfit draws epoch e's shuffle from (seed, e)
    model = run.model
    (x_train, y_train), test = load_dataset(spec.train.dataset, data_dir=data_dir)
    x, y = _prepare_training_data(spec, x_train, y_train, len(run.class_names))
    log, events = _EpochLog(run.history), EpochEvents(x, input_scale=PIXEL_SCALE)
    log.recorders = MechanismRecorder.for_run(x, y, spec, previous=run.path)  # if it recorded
    start = time.perf_counter()
    status = _fit(model, spec, x, y, log, verbose, tuple(callbacks), events)
    seconds = run.metrics.train_seconds + time.perf_counter() - start
    log.epoch_seconds = [*run.metrics.epoch_seconds, *log.epoch_seconds]
    dataset = run.dataset.model_dump()
    return _save_run(
        run.path,
        model,
        spec,
        dataset,
        log,
        status,
        test,
        seconds,
        run.config,
        pictures=pictures,
        events=events,
        calibrate_on=(x_train, y_train) if calibrate else None,
    )
