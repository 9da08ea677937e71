"""Run an experiment: every (variant, seed) trained as a normal run, then numbers, plots, words.

An experiment's folder is `RUNS_DIR/experiments/<timestamp>-<name>/`:

- `runs/`: one ordinary run per (variant, seed), trained by `training.train` like
  `digitlab train` does, so `evaluate`, `predict`, `serve` and `compare` take any of them;
  and, for a variant with a learning-rate grid, one tuning run per rate (`<variant>-lr0.03`,
  seed `plan.TUNING_SEED`);
- `experiment.json`: the definition, the budget, per-variant figures across seeds and the
  conclusion; rewritten (atomically) after every finished run, so a kill loses no finished
  work, and marked `interrupted` until every run is done;
- the plots, and `report.html` when the report writer is installed.

All runs train in this one process (imports and compilation paid once; `distributed` runs
them on workers). Rates are tuned first, then runs go seed by seed, so an interrupted
experiment holds comparable variants; `resume` trains only what is missing. `plan` (pure:
specs, budget, cells), `record` (the files), `results` (figures and sentences), `progress`
(the terminal); this module carries the plan out: tune → train → conclude → write.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from digitlab import interrupts
from digitlab.errors import DivergedError, RunError, SpecError
from digitlab.experiments import plan, predictions, results
from digitlab.experiments.inputs import Inputs
from digitlab.experiments.progress import SECONDS_PER_RUN, Progress, epoch_cost
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
    guess: str | None = None,
) -> Outcome:
    """Tune each variant's learning rate on its grid, train every (variant, seed) of
    `definition`, then write experiment.json, plots, report.

    Args:
        definition: a built-in (`load_definition("dropout")`) or a user's definition.
        seeds, epochs, train_samples: override the budget (seeds 0..N-1).
        quick: the definition's tiny budget (a smoke run: 1 epoch, a few hundred digits, 1
            seed, each variant at its own rate: no tuning, no `min_updates`).
        learning_rate_policy: "tuned", "same" or "linear" (default: the definition's).
        runs_dir: where `experiments/` lives (default `$DIGITLAB_RUNS_DIR` or ./runs).
        resume: an experiment folder (path, name, or "latest") to complete: only runs it
            lacks are trained, with its own budget; `seeds` may add seeds.
        data_dir: where the dataset is read from (default: as `load_dataset`).
        console: a Rich console for progress (default: stderr).
        live: force the progress bar on or off (default: on a terminal only).
        guess: the learner's own guess, made before the runs: stored, shown beside the result.

    Returns:
        The `Outcome`; `outcome.interrupted` after Ctrl-C/SIGTERM, with a partial record.

    Raises:
        SpecError: a bad budget or variant, or a run's spec fails to train.
        RunError: the folder can't be written, or the experiment to resume isn't found.
    """
    policy = plan.checked_policy(learning_rate_policy)
    sizes = {"seeds": seeds, "epochs": epochs, "train_samples": train_samples}
    with contextlib.ExitStack() as held:  # the folder's lock, until the record is final
        if resume is None:
            experiment = _start(definition, quick, sizes, policy, runs_dir, data_dir, held)
        else:
            experiment = _resume(resume, definition.name, sizes, policy, runs_dir, data_dir, held)
        predictions.before_runs(experiment, guess, console)  # issue 21: measure, then predict
        experiment.write("interrupted")  # the folder is an experiment from now on, resumable
        status = _train_all(experiment, console, live)
        record = experiment.write(status, final=True)
    return Outcome(experiment.folder, record, experiment.trained)


# ------------------------------------------------------------------------------ the experiment
@dataclass
class _Experiment:
    """One experiment while it runs: what it is, where, and what is done so far."""

    folder: Path
    definition: Definition
    budget: Budget
    policy: str
    quick: bool
    created: datetime
    inputs: Inputs
    data_dir: str | Path | None
    specs: dict[str, Spec] = field(default_factory=dict)  # each variant's, at seed 0
    weights: dict[str, int] = field(default_factory=dict)  # each variant's parameters
    classes: int = 10
    tuning: dict[str, results.Tuning] = field(default_factory=dict)  # tuned variants' grids
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
        from digitlab.report.pages import write_run_reports

        seeds = list(range(self.budget.seeds))
        curves = results.curves_of(self.definition, self.done)
        target = results.target_accuracy(self.definition, curves, self.classes)
        variants = results.variant_results(
            self.definition, self.specs, self.done, seeds, self.diverged,
            tuning=self.tuning, target=target,
        )  # fmt: skip
        record = results.build_record(
            self.definition, self.budget, self.policy, self.quick, self.specs, variants,
            target, self.classes, final, status=status, created=self.created, seeds=seeds,
            plots=[], **self._clock(),
        )  # fmt: skip
        if final and any(curves.values()):
            tested = [*record.claims, *record.tests]
            drawn = plots.draw(
                self.folder, self.definition, variants, curves, tested, target=target,
                recorded=results.recordings(self.folder, variants),
            )  # fmt: skip
            record = record.model_copy(update={"plots": tuple(p.name for p in drawn)})
        record = predictions.judged(self.folder, record, draw=final and any(curves.values()))
        if final and record.plots:  # the runs' pages too, in the time the record states
            write_run_reports(self.folder, record, runs_dir=self.folder / RUNS_FOLDER)
            record = record.model_copy(update=self._clock())
        write_record(self.folder, record)
        if final and record.plots:
            write_report(self.folder)
        return record

    def _clock(self) -> dict[str, float]:
        """The record's wall_seconds and cpu_seconds so far (a resumed one's included)."""
        wall = self.seconds_before[0] + time.perf_counter() - self.started[0]
        cpu = self.seconds_before[1] + time.process_time() - self.started[1]
        return {"wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2)}

    def spec_for(self, variant: Variant, seed: int, rate: float | None = None) -> Spec:
        """The spec of one run: the variant's at `seed`, at `rate` if given (a tuning run)."""
        spec = self.specs[variant.name]
        if rate is None:
            return spec.replace(train={"seed": seed})
        return spec.replace(train={"seed": seed, "learning_rate": rate})

    def choose_rates(self) -> None:
        """Give each tuned variant whose grid is done the rate tuning chose."""
        for name, tuning in self.tuning.items():
            variant = next(v for v in self.definition.variants if v.name == name)
            rate = tuning.chosen(variant.learning_rates)
            if rate is not None:
                self.specs[name] = self.specs[name].replace(train={"learning_rate": rate})

    def untrainable(self) -> set[str]:
        """Tuned variants whose every rate diverged: none is left to train their seeds at."""
        return {
            v.name
            for v in self.definition.variants
            if v.name in self.tuning
            and self.tuning[v.name].finished(v.learning_rates)
            and self.tuning[v.name].chosen(v.learning_rates) is None
        }

    def epoch_cost(self, name: str) -> float:
        spec = self.specs[name]
        fit = plan.fit_digits(spec)
        steps = plan.steps_per_epoch(spec.train.batch_size, fit)
        return epoch_cost(self.weights[name], fit, steps)


def _start(definition, quick, sizes, policy, runs_dir, data_dir, held) -> _Experiment:
    """A new experiment: its budget and every variant checked, then its folder claimed (one
    `mkdir`: no other process gets it) and locked in `held`."""
    budget = plan.make_budget(definition, quick, **sizes)
    policy = policy or definition.learning_rate_policy
    inputs = Inputs(budget, data_dir)
    specs = _specs(definition, budget, policy, quick, inputs)
    plan.check_budget(budget, specs)
    weights, classes = _build_each(specs)
    folder = claim_run_path(check_writable(experiments_dir(runs_dir)), definition.name)
    held.enter_context(locked(folder))
    check_writable(folder / RUNS_FOLDER)
    experiment = _Experiment(
        folder, definition, budget, policy, quick, datetime.now(), inputs, data_dir, specs,
        weights, classes,
    )  # fmt: skip
    experiment.tuning = _tuned(definition, policy, quick)
    return experiment


def _resume(ref, name, sizes, policy, runs_dir, data_dir, held) -> _Experiment:
    """An experiment folder to complete, with its own definition and budget, and its runs;
    locked in `held` before its record is read (a second process is refused)."""
    folder = find_experiment(ref, name, runs_dir)
    held.enter_context(locked(folder))
    previous = read_record(folder)
    definition = validate(Definition, previous.definition, f"{folder / RECORD_FILE}")
    budget = plan.resumed_budget(previous, folder, policy=policy, **sizes)
    policy, quick = previous.learning_rate_policy, bool(previous.budget.get("quick", False))
    inputs = Inputs(budget, data_dir)
    specs = _specs(definition, budget, policy, quick, inputs)
    plan.check_budget(budget, specs)
    weights, classes = _build_each(specs)
    check_writable(folder / RUNS_FOLDER)
    experiment = _Experiment(
        folder, definition, budget, policy, quick, previous.created, inputs, data_dir, specs,
        weights, classes, seconds_before=(previous.wall_seconds, previous.cpu_seconds),
        diverged={(v.name, s) for v in previous.variants for s in v.diverged_seeds},
    )  # fmt: skip
    experiment.tuning = _tuned(definition, policy, quick)
    cells, tuning = _runs_of(folder, specs)
    for (variant, rate), run in tuning.items():
        if variant in experiment.tuning:
            experiment.tuning[variant].runs[rate] = run
    for variant, rate in results.recorded_diverged_rates(previous):
        if variant in experiment.tuning:
            experiment.tuning[variant].diverged.add(rate)
    experiment.choose_rates()
    activations = results.recorded_activations(previous)
    for key, run in cells.items():
        if key[1] < budget.seeds:
            complete = run.status == "complete"
            loss = results.recorded_train_loss(previous, run.name) if complete else None
            experiment.done[key] = results.Done(run, loss, activations.get(run.name, {}))
    return experiment


def _tuned(definition: Definition, policy: str, quick: bool) -> dict[str, results.Tuning]:
    """An empty grid for each variant whose learning rate is tuned."""
    return {
        v.name: results.Tuning()
        for v in definition.variants
        if plan.tunes(definition, v, policy, quick)
    }


def _runs_of(folder: Path, specs: dict[str, Spec]) -> tuple[dict, dict]:
    """The runs in the folder's runs/: by (variant, seed) and the tuning runs by (variant,
    rate); each must be of a variant of the definition (one renamed in experiment.json would
    train again and leave its runs out).

    Raises:
        RunError: a run's variant is not in the definition.
    """
    cells, tuning = existing_runs(folder, plan.TUNING_SEED)
    for (variant, _key), run in [*cells.items(), *tuning.items()]:
        if variant not in specs:
            raise RunError(
                f"{folder / RUNS_FOLDER / run.name} is a run of variant '{variant}', which the "
                f"definition in {RECORD_FILE} does not have (its variants: {', '.join(specs)}); "
                "restore the definition, or move the run out of runs/"
            )
    return cells, tuning


def _specs(
    definition: Definition, budget: Budget, policy: str, quick: bool, inputs: Inputs
) -> dict[str, Spec]:
    """Each variant's spec at seed 0; standardised inputs use their dataset's statistics."""
    specs = {}
    for variant in definition.variants:
        spec = plan.variant_spec(definition, variant, budget, 0, policy, quick=quick)
        if variant.input_scaling == "standardize":
            stats = inputs.standardize(spec.train.dataset, spec.input_shape)
            spec = plan.variant_spec(definition, variant, budget, 0, policy, stats, quick=quick)
        specs[variant.name] = spec
    return specs


def _build_each(specs: dict[str, Spec]) -> tuple[dict[str, int], int]:
    """Build and compile every variant's network once, as its runs will, so a layer, loss or
    optimizer that doesn't fit is refused before the first cell trains. Returns each
    variant's parameter count (what its epochs cost) and the dataset's number of classes.

    Raises:
        SpecError: naming the variant.
    """
    from digitlab.data import class_names
    from digitlab.model import build_model, compile_model

    weights, classes = {}, 10
    for name, spec in specs.items():
        classes = len(class_names(spec.train.dataset))
        try:
            model = build_model(spec, num_classes=classes)
            compile_model(model, spec, num_classes=classes)
        except SpecError as exc:
            raise SpecError(f"variant '{name}': {exc}") from None
        weights[name] = model.count_params()
    return weights, classes


# ------------------------------------------------------------------------------------ training
def _train_all(experiment: _Experiment, console, live) -> str:
    """Tune the learning rates, then train the cells, the record rewritten after each run;
    returns the status."""
    definition = experiment.definition
    tuning = plan.tuning_to_do(
        definition, experiment.policy, experiment.quick,
        done=[(n, r) for n, t in experiment.tuning.items() for r, run in t.runs.items()
              if run.status == "complete"],
        diverged=[(n, r) for n, t in experiment.tuning.items() for r in t.diverged],
    )  # fmt: skip
    cells = plan.cells_to_do(
        definition,
        experiment.budget.seeds,
        {key for key, done in experiment.done.items() if done.run.status == "complete"},
        experiment.diverged,
        experiment.untrainable(),
    )
    done_epochs = {key: done.run.epochs_done for key, done in experiment.done.items()}
    for (name, rate), left in _partial_tuning(experiment).items():
        done_epochs[(name, rate)] = left
    work = [(v.name, r) for v, r in tuning] + [(v.name, s) for v, s in cells]
    epochs = {key: experiment.specs[key[0]].train.epochs - done_epochs.get(key, 0) for key in work}
    cost = sum(n * experiment.epoch_cost(key[0]) + SECONDS_PER_RUN for key, n in epochs.items())
    with (
        Progress(console, cost, sum(epochs.values()), len(work), live) as progress,
        interrupts.stop_on_signals() as stop,
    ):
        for variant, rate in tuning:
            if stop.is_set() or not _tune(experiment, variant, rate, progress, stop):
                return "interrupted"
            experiment.write("interrupted")  # a kill from here on loses no finished run
        experiment.choose_rates()
        untrainable = experiment.untrainable()
        for index, (variant, seed) in enumerate(cells):
            if variant.name in untrainable:
                continue
            if stop.is_set() or not _train_cell(experiment, variant, seed, progress, stop):
                return "interrupted"
            if index < len(cells) - 1:
                experiment.write("interrupted")
    return "complete"


def _partial_tuning(experiment: _Experiment) -> dict[tuple[str, float], int]:
    """The epochs done by interrupted tuning runs, by (variant, rate)."""
    return {
        (name, rate): run.epochs_done
        for name, tuning in experiment.tuning.items()
        for rate, run in tuning.runs.items()
        if run.status != "complete"
    }


def _tune(experiment: _Experiment, variant: Variant, rate: float, progress, stop) -> bool:
    """Train (or continue) the tuning run of one rate of `variant`'s grid; False if it was
    interrupted. A run that diverges is recorded as a point of the grid."""
    tuning = experiment.tuning[variant.name]
    label = f"{experiment.definition.name} {variant.name} learning rate {rate:g}"
    previous = next((r for k, r in tuning.runs.items() if math.isclose(k, rate)), None)
    spec = experiment.spec_for(variant, plan.TUNING_SEED, rate)
    name = f"{variant.name}-lr{rate:g}"
    run, _ = _fit(experiment, spec, name, previous, label, progress, stop, statistics=False)
    if run is None:
        tuning.diverged.add(rate)
        return True
    tuning.runs[rate] = run
    return run.status == "complete"


def _train_cell(experiment: _Experiment, variant: Variant, seed: int, progress, stop) -> bool:
    """Train (or continue) one (variant, seed) as an ordinary run; False if it was
    interrupted. A run that diverges is recorded as a result, not a failure."""
    key = (variant.name, seed)
    label = f"{experiment.definition.name} {variant.name} seed {seed}"
    previous = experiment.done.get(key)
    spec = experiment.spec_for(variant, seed)
    stats = experiment.definition.activation_stats
    run, activations = _fit(
        experiment, spec, f"{variant.name}-seed{seed}", previous.run if previous else None,
        label, progress, stop, statistics=stats, matched=experiment.definition.matched_loss,
        activations=previous.activations if previous else None,
    )  # fmt: skip
    if run is None:
        experiment.diverged.add(key)
        return True
    experiment.done[key] = results.Done(run, None, activations)
    return run.status == "complete"


def _fit(
    experiment: _Experiment,
    spec: Spec,
    name: str,
    previous: Run | None,
    label: str,
    progress,
    stop,
    *,
    statistics: bool,
    matched: float | None = None,
    activations: dict | None = None,
) -> tuple[Run | None, dict]:
    """Train a new run, or continue an interrupted `previous` one, with the experiment's
    callbacks; (None, {}) if it diverged.

    Raises:
        SpecError: the run's spec fails to train (the record is written first).
    """
    from digitlab.experiments.callbacks import ActivationStatistics, EpochProgress, measuring
    from digitlab.fastfit import StopOnRequest

    progress.starting(label)
    x_fit, y_fit, x_batch = experiment.inputs.for_spec(spec)
    cost = experiment.epoch_cost(spec.name)
    stats = ActivationStatistics(x_batch, activations)
    callbacks = [
        *measuring(x_fit, y_fit, matched, previous.history if previous else None),  # first
        EpochProgress(lambda: progress.advance(cost)),
        StopOnRequest(stop),
        *([stats] if statistics else []),
    ]
    try:
        run = _train_one(spec, experiment, name, previous, callbacks)
    except DivergedError:
        progress.diverged(label)
        return None, {}
    except SpecError as exc:
        experiment.write("interrupted", final=True)  # keep what is finished, say where
        raise SpecError(
            f"{label}: {exc}. The finished runs are kept in {experiment.folder}"
        ) from None
    experiment.trained.append(run.name)
    progress.finished_run(label, run)
    return run, (stats.values if statistics else {})


def _train_one(spec, experiment: _Experiment, name: str, previous: Run | None, callbacks) -> Run:
    from digitlab import training

    # No pictures or report.html (~3 s a run: the experiment's report writes them, `digitlab
    # evaluate RUN` the gallery), no confidence thresholds (longer than the fit; not compared).
    # A variant's RECORDED_SEED run records its mechanisms (~4 s with its first trace: dropout
    # took 283 s, not 261; not in a smoke run) for the report's pictures.
    plain = {"verbose": 0, "callbacks": callbacks, "pictures": False, "calibrate": False}
    if previous is not None and previous.status == "interrupted":
        return training.resume(previous, data_dir=experiment.data_dir, **plain)  # as it did
    return training.train(
        spec, runs_dir=experiment.folder / RUNS_FOLDER, name=name, data_dir=experiment.data_dir,
        mechanisms=spec.train.seed == plan.RECORDED_SEED and not experiment.quick, **plain,
    )  # fmt: skip


def write_report(folder: Path) -> Path:
    """The experiment's report.html (`digitlab.report`), its runs found in its runs/ folder."""
    from digitlab.report import write_experiment_report

    return write_experiment_report(folder, runs_dir=folder / RUNS_FOLDER)
