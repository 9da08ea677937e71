"""Run an experiment: every (variant, seed) trained as a normal run, then numbers, plots, words.

An experiment's folder is `RUNS_DIR/experiments/<timestamp>-<name>/`:

- `runs/`: one ordinary run per (variant, seed), trained by `training.train` like
  `digitlab train` does, so `evaluate`, `predict`, `serve` and `compare` take any of them;
- `experiment.json`: the definition, the budget, per-variant figures across seeds and the
  conclusion; rewritten (atomically) after every finished run, so a kill loses no finished
  work, and marked `interrupted` until every run is done;
- the plots, and `report.html` when the report writer is installed.

All runs train in this one process: imports and the JAX compilation are paid once (and the
compiled programs are cached across variants that share shapes). Runs go seed by seed, so an
interrupted experiment holds comparable variants. `resume` trains only what is missing.

The work is split: `plan` (pure: specs, budget, cells), `record` (experiment.json and the
folders), `results` (figures and sentences), `progress` (the terminal); this module carries
the plan out: plan → train each cell → conclude → write the record, plots and report.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from digitlab import interrupts
from digitlab.errors import DivergedError, RunError, SpecError
from digitlab.experiments import plan, results
from digitlab.experiments.progress import Progress
from digitlab.experiments.record import (
    RECORD_FILE,
    RUNS_FOLDER,
    existing_runs,
    experiments_dir,
    find_experiment,
    list_experiments,  # noqa: F401  (imported from here by the CLI)
    locked,
    read_record,
    write_record,
)
from digitlab.experiments.schema import (
    LEARNING_RATE_POLICIES,
    Budget,
    Definition,
    ExperimentRecord,
    Variant,
)
from digitlab.runs import Run, check_writable, claim_run_path
from digitlab.schema import Spec, validate


@dataclass
class Outcome:
    """What `run_experiment` did: the folder, its record and whether it was interrupted."""

    folder: Path
    record: ExperimentRecord
    trained: list[str] = field(default_factory=list)  # run names trained by this call

    @property
    def interrupted(self) -> bool:
        return self.record.status == "interrupted"


def run_experiment(
    definition: Definition,
    *,
    seeds: int | None = None,
    epochs: int | None = None,
    train_samples: int | None = None,
    quick: bool = False,
    learning_rate_policy: str | None = None,
    runs_dir: str | Path | None = None,
    resume: str | Path | None = None,
    data_dir: str | Path | None = None,
    console=None,
    live: bool | None = None,
) -> Outcome:
    """Train every (variant, seed) of `definition`, then write experiment.json, plots, report.

    Args:
        definition: a built-in (`load_definition("dropout")`) or a user's definition.
        seeds, epochs, train_samples: override the budget (seeds 0..N-1).
        quick: the definition's tiny budget (1 epoch, a few hundred digits, 1 seed).
        learning_rate_policy: "same" or "linear" (default: the definition's).
        runs_dir: where `experiments/` lives (default `$DIGITLAB_RUNS_DIR` or ./runs).
        resume: an experiment folder (path, name, or "latest") to complete: only runs it
            lacks are trained, with its own budget; `seeds` may add seeds.
        data_dir: where the dataset is read from (default: as `load_dataset`).
        console: a Rich console for progress (default: stderr).
        live: force the progress bar on or off (default: on a terminal only).

    Returns:
        The `Outcome`; `outcome.interrupted` after Ctrl-C/SIGTERM, with a partial record.

    Raises:
        SpecError: a bad budget or variant, or a run's spec fails to train.
        RunError: the folder can't be written, or the experiment to resume isn't found.
    """
    if learning_rate_policy not in (None, *LEARNING_RATE_POLICIES):
        raise SpecError(
            f"learning_rate_policy must be one of {', '.join(LEARNING_RATE_POLICIES)}, "
            f"got {learning_rate_policy!r}"
        )
    sizes = {"seeds": seeds, "epochs": epochs, "train_samples": train_samples}
    policy = learning_rate_policy
    with contextlib.ExitStack() as held:  # the folder's lock, until the record is final
        if resume is None:
            experiment = _start(definition, quick, sizes, policy, runs_dir, data_dir, held)
        else:
            experiment = _resume(resume, definition.name, sizes, policy, runs_dir, data_dir, held)
        cells = plan.cells_to_do(
            experiment.definition,
            experiment.budget.seeds,
            {key for key, done in experiment.done.items() if done.run.status == "complete"},
            experiment.diverged,
        )
        experiment.write("interrupted")  # the folder is an experiment from now on, resumable
        status = _train_cells(experiment, cells, console, live)
        record = experiment.write(status, final=True)
    return Outcome(experiment.folder, record, experiment.trained)


# ------------------------------------------------------------------------------ the experiment
class _Inputs:
    """The digits an experiment measures its runs on, loaded once per dataset and shape: the
    training digits fit sees (the final training loss, in inference mode) and the activation
    batch (`plan.ACTIVATION_BATCH` validation digits just before the test-free end)."""

    def __init__(self, budget: Budget, data_dir: str | Path | None):
        self.budget, self.data_dir = budget, data_dir
        self._train: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._arrays: dict[tuple, np.ndarray] = {}

    def _training_digits(self, dataset: str) -> tuple[np.ndarray, np.ndarray]:
        from digitlab.data import load_dataset

        if dataset not in self._train:
            self._train[dataset] = load_dataset(dataset, data_dir=self.data_dir)[0]
        return self._train[dataset]

    def standardize(self, dataset: str) -> tuple[float, float]:
        """One mean and one deviation of the scaled pixels over the training digits fit sees."""
        from digitlab.model import prepare_inputs

        x, _ = self._training_digits(dataset)
        pixels = prepare_inputs(x[: self.budget.fit_samples])
        return float(pixels.mean()), float(pixels.std())

    def for_spec(self, spec: Spec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fit images, their loss targets, the activation batch), as `spec`'s network takes
        them."""
        from digitlab.data import class_names
        from digitlab.evaluation import loss_targets
        from digitlab.model import prepare_inputs

        dataset, shape = spec.train.dataset, spec.input_shape
        fit, end = self.budget.fit_samples, self.budget.train_samples
        start = max(fit, end - plan.ACTIVATION_BATCH)
        x, y = self._training_digits(dataset)
        classes = len(class_names(dataset))
        return (
            self._cached((dataset, shape, "fit"), lambda: prepare_inputs(x[:fit], shape)),
            self._cached(
                (dataset, spec.train.one_hot), lambda: loss_targets(y[:fit], spec, classes)
            ),
            self._cached((dataset, shape, "batch"), lambda: prepare_inputs(x[start:end], shape)),
        )

    def _cached(self, key: tuple, make) -> np.ndarray:
        if key not in self._arrays:
            self._arrays[key] = make()
        return self._arrays[key]


@dataclass
class _Experiment:
    """One experiment while it runs: what it is, where, and what is done so far."""

    folder: Path
    definition: Definition
    budget: Budget
    policy: str
    quick: bool
    created: datetime
    inputs: _Inputs
    data_dir: str | Path | None
    specs: dict[str, Spec] = field(default_factory=dict)  # each variant's, at seed 0
    done: dict[tuple[str, int], results.Done] = field(default_factory=dict)
    diverged: set[tuple[str, int]] = field(default_factory=set)
    trained: list[str] = field(default_factory=list)
    seconds_before: tuple[float, float] = (0.0, 0.0)  # wall and CPU of earlier sessions
    started: tuple[float, float] = field(
        default_factory=lambda: (time.perf_counter(), time.process_time())
    )

    def write(self, status: str, final: bool = False) -> ExperimentRecord:
        """Compute the figures and the conclusion, write experiment.json; once `final`, draw
        the plots and write the report too."""
        from digitlab.experiments import plots

        seeds = list(range(self.budget.seeds))
        variants = results.variant_results(
            self.definition, self.budget, self.specs, self.done, seeds, self.diverged
        )
        curves = results.curves_of(self.definition, self.done, self.budget)
        drawn: list[str] = []
        if final and any(curves.values()):
            drawn = [p.name for p in plots.draw(self.folder, self.definition, variants, curves)]
        record = results.build_record(
            self.definition, self.budget, self.policy, self.quick, self.specs, variants, curves,
            status=status, created=self.created, seeds=seeds, plots=drawn,
            wall_seconds=self.seconds_before[0] + time.perf_counter() - self.started[0],
            cpu_seconds=self.seconds_before[1] + time.process_time() - self.started[1],
        )  # fmt: skip
        write_record(self.folder, record)
        if final and drawn:
            write_report(self.folder)
        return record


def _start(definition, quick, sizes, policy, runs_dir, data_dir, held) -> _Experiment:
    """A new experiment: its budget and every variant checked, then its folder claimed (one
    `mkdir`: no other process gets it) and locked in `held`."""
    budget = plan.make_budget(definition, quick, **sizes)
    policy = policy or definition.learning_rate_policy
    inputs = _Inputs(budget, data_dir)
    specs = _specs(definition, budget, policy, inputs)
    plan.check_budget(budget, specs)
    _build_each(specs)
    folder = claim_run_path(check_writable(experiments_dir(runs_dir)), definition.name)
    held.enter_context(locked(folder))
    check_writable(folder / RUNS_FOLDER)
    return _Experiment(
        folder, definition, budget, policy, quick, datetime.now(), inputs, data_dir, specs
    )


def _resume(ref, name, sizes, policy, runs_dir, data_dir, held) -> _Experiment:
    """An experiment folder to complete, with its own definition and budget, and its runs;
    locked in `held` before its record is read (a second process is refused)."""
    folder = find_experiment(ref, name, runs_dir)
    held.enter_context(locked(folder))
    previous = read_record(folder)
    definition = validate(Definition, previous.definition, f"{folder / RECORD_FILE}")
    budget = plan.resumed_budget(previous, folder, policy=policy, **sizes)
    inputs = _Inputs(budget, data_dir)
    specs = _specs(definition, budget, previous.learning_rate_policy, inputs)
    plan.check_budget(budget, specs)
    _build_each(specs)
    check_writable(folder / RUNS_FOLDER)
    experiment = _Experiment(
        folder, definition, budget, previous.learning_rate_policy,
        bool(previous.budget.get("quick", False)), previous.created, inputs, data_dir, specs,
        seconds_before=(previous.wall_seconds, previous.cpu_seconds),
        diverged={(v.name, s) for v in previous.variants for s in v.diverged_seeds},
    )  # fmt: skip
    activations = results.recorded_activations(previous)
    for key, run in _runs_of(folder, experiment.specs).items():
        if key[1] < budget.seeds and key[0] in experiment.specs:
            complete = run.status == "complete"
            loss = results.recorded_train_loss(previous, run.name) if complete else None
            experiment.done[key] = results.Done(run, loss, activations.get(run.name, {}))
    return experiment


def _runs_of(folder: Path, specs: dict[str, Spec]) -> dict[tuple[str, int], Run]:
    """The runs in the folder's runs/, by (variant, seed); each must be of a variant of the
    definition (one renamed in experiment.json would train again and leave its runs out).

    Raises:
        RunError: a run's variant is not in the definition.
    """
    runs = existing_runs(folder)
    for (variant, _seed), run in runs.items():
        if variant not in specs:
            raise RunError(
                f"{folder / RUNS_FOLDER / run.name} is a run of variant '{variant}', which the "
                f"definition in {RECORD_FILE} does not have (its variants: {', '.join(specs)}); "
                "restore the definition, or move the run out of runs/"
            )
    return runs


def _specs(definition: Definition, budget: Budget, policy: str, inputs: _Inputs) -> dict[str, Spec]:
    """Each variant's spec at seed 0; standardised inputs use their dataset's statistics."""
    specs = {}
    for variant in definition.variants:
        spec = plan.variant_spec(definition, variant, budget, 0, policy)
        if variant.input_scaling == "standardize":
            stats = inputs.standardize(spec.train.dataset)
            spec = plan.variant_spec(definition, variant, budget, 0, policy, stats)
        specs[variant.name] = spec
    return specs


def _build_each(specs: dict[str, Spec]) -> None:
    """Build and compile every variant's network once, as its runs will, so a layer, loss or
    optimizer that doesn't fit is refused before the first cell trains.

    Raises:
        SpecError: naming the variant.
    """
    from digitlab.data import class_names
    from digitlab.model import build_model, compile_model

    for name, spec in specs.items():
        classes = len(class_names(spec.train.dataset))
        try:
            compile_model(build_model(spec, num_classes=classes), spec, num_classes=classes)
        except SpecError as exc:
            raise SpecError(f"variant '{name}': {exc}") from None


# ------------------------------------------------------------------------------------ training
def _train_cells(experiment: _Experiment, cells: list[plan.Cell], console, live) -> str:
    """Train the cells in order, the record rewritten after each; returns the status."""
    epochs_done = {key: done.run.epochs_done for key, done in experiment.done.items()}
    total = plan.epochs_to_do(cells, experiment.budget, epochs_done)
    with (
        Progress(console, total, len(cells), live) as progress,
        interrupts.stop_on_signals() as stop,
    ):
        for index, (variant, seed) in enumerate(cells):
            if stop.is_set():  # a signal between two fits
                return "interrupted"
            run = _train_cell(experiment, variant, seed, progress, stop)
            if run is not None and run.status != "complete":  # a signal during the fit
                return "interrupted"
            if index < len(cells) - 1:
                experiment.write("interrupted")  # a kill from here on loses no finished run
    return "complete"


def _train_cell(experiment: _Experiment, variant: Variant, seed: int, progress, stop) -> Run | None:
    """Train (or continue) one (variant, seed) as an ordinary run; None if it diverged,
    which is recorded as a result, not a failure.

    Raises:
        SpecError: the run's spec fails to train (the record is written first).
    """
    from digitlab.experiments.callbacks import ActivationStatistics, EpochProgress, TrainingLoss
    from digitlab.fastfit import StopOnRequest

    definition, key = experiment.definition, (variant.name, seed)
    label = f"{definition.name} {variant.name} seed {seed}"
    progress.starting(label)
    spec = experiment.specs[variant.name].replace(train={"seed": seed})
    x_fit, y_fit, x_batch = experiment.inputs.for_spec(spec)
    previous = experiment.done.get(key)
    loss = TrainingLoss(x_fit, y_fit)
    stats = ActivationStatistics(x_batch, previous.activations if previous else None)
    callbacks = [EpochProgress(progress.advance), StopOnRequest(stop), loss]
    if definition.activation_stats:
        callbacks.append(stats)
    try:
        run = _train_one(spec, experiment, variant.name, seed, previous, callbacks)
    except DivergedError:
        experiment.diverged.add(key)
        progress.diverged(label)
        return None
    except SpecError as exc:
        experiment.write("interrupted", final=True)  # keep what is finished, say where
        raise SpecError(
            f"{label}: {exc}. The finished runs are kept in {experiment.folder}"
        ) from None
    activations = stats.values if definition.activation_stats else {}
    experiment.done[key] = results.Done(run, loss.loss, activations)
    experiment.trained.append(run.name)
    progress.finished_run(label, run)
    return run


def _train_one(spec, experiment: _Experiment, variant, seed, previous, callbacks) -> Run:
    from digitlab import training

    data_dir = experiment.data_dir
    if previous is not None and previous.run.status == "interrupted":
        return training.resume(previous.run, data_dir=data_dir, verbose=0, callbacks=callbacks)
    return training.train(
        spec,
        runs_dir=experiment.folder / RUNS_FOLDER,
        name=f"{variant}-seed{seed}",
        data_dir=data_dir,
        verbose=0,
        callbacks=callbacks,
        pictures=not experiment.quick,  # ~3 s a run; a report draws curves and matrix itself
        calibrate=False,  # confidence thresholds: longer than the fit, and not compared here
    )


def write_report(folder: Path) -> Path:
    """The experiment's report.html (`digitlab.report`), its runs found in its runs/ folder."""
    from digitlab.report import write_experiment_report

    return write_experiment_report(folder, runs_dir=folder / RUNS_FOLDER)
