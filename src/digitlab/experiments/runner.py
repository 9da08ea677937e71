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
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from digitlab import interrupts
from digitlab.errors import DivergedError, RunError, SpecError
from digitlab.experiments import conclusions
from digitlab.experiments.plan import _budget, variant_spec
from digitlab.experiments.progress import _Progress
from digitlab.experiments.record import (
    RECORD_FILE,
    RUNS_FOLDER,
    _existing_runs,
    experiments_dir,
    find_experiment,
    list_experiments,  # noqa: F401  (imported from here by the CLI)
    read_record,
    write_record,
)
from digitlab.experiments.results import (
    _conclusion,
    _curves,
    _Done,
    _recorded_train_loss,
    _variant_results,
)
from digitlab.experiments.schema import Budget, Definition, ExperimentRecord
from digitlab.runs import Run, check_writable, new_run_path
from digitlab.schema import Spec, validate

ACTIVATION_BATCH = 500  # the fixed validation digits the activation statistics are taken on


@dataclass
class Outcome:
    """What `run_experiment` did: the folder, its record and whether it was interrupted."""

    folder: Path
    record: ExperimentRecord
    trained: list[str] = field(default_factory=list)  # run names trained by this call

    @property
    def interrupted(self) -> bool:
        return self.record.status == "interrupted"


def _standardize(budget: Budget, data_dir) -> tuple[float, float]:
    """One mean and one deviation of the pixels /255 over the training digits fit sees."""
    from digitlab.data import load_dataset

    (x, _), _ = load_dataset("mnist", data_dir=data_dir)
    pixels = x[: budget.fit_samples].astype(np.float32) / 255.0
    return float(pixels.mean()), float(pixels.std())


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
        console: a Rich console for progress (default: stderr).
        live: force the progress bar on or off (default: on a terminal only).

    Returns:
        The `Outcome`; `outcome.interrupted` after Ctrl-C/SIGTERM, with a partial record.

    Raises:
        SpecError: a bad budget or variant; training diverged.
        RunError: the folder can't be written, or the experiment to resume isn't found.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    if resume is not None:
        folder = find_experiment(resume, definition.name, runs_dir)
        previous = read_record(folder)
        definition = validate(Definition, previous.definition, f"{folder / RECORD_FILE}")
        old = validate(
            Budget,
            {key: previous.budget.get(key) for key in Budget.model_fields},
            f"{folder / RECORD_FILE}: budget",
            error=RunError,
        )
        changed = [
            flag
            for flag, value, was in (
                ("--epochs", epochs, old.epochs),
                ("--train-samples", train_samples, old.train_samples),
            )
            if value is not None and value != was
        ]
        if changed or (learning_rate_policy not in (None, previous.learning_rate_policy)):
            raise SpecError(
                f"--resume completes {folder.name} with its own budget, so "
                f"{', '.join(changed) or '--lr-policy'} can't change; leave them out "
                "(only --seeds may add seeds)"
            )
        budget = validate(Budget, {**old.model_dump(), "seeds": seeds or old.seeds}, "--seeds")
        policy = previous.learning_rate_policy
        quick = bool(previous.budget.get("quick", False))
        created = previous.created
        wall_before, cpu_before = previous.wall_seconds, previous.cpu_seconds
    else:
        budget = _budget(definition, quick, seeds=seeds, epochs=epochs, train_samples=train_samples)
        policy = learning_rate_policy or definition.learning_rate_policy
        folder = new_run_path(check_writable(experiments_dir(runs_dir)), definition.name)
        created, previous, wall_before, cpu_before = datetime.now(), None, 0.0, 0.0
    check_writable(folder / RUNS_FOLDER)
    seed_list = list(range(budget.seeds))

    standardize = (0.0, 1.0)
    if any(v.input_scaling == "standardize" for v in definition.variants):
        standardize = _standardize(budget, data_dir)
    specs = {
        v.name: variant_spec(definition, v, budget, 0, policy, standardize)
        for v in definition.variants
    }
    old_activations: dict[str, dict] = {}
    if previous is not None:
        for v in previous.variants:
            old_activations.update(
                {
                    run: {k: {s: list(x) for s, x in st.items()} for k, st in layers.items()}
                    for run, layers in v.activations.items()
                }
            )

    from digitlab.data import load_dataset
    from digitlab.evaluation import loss_targets

    (x_all, y_all), _ = load_dataset("mnist", data_dir=data_dir)
    fit = budget.fit_samples
    x_fit = x_all[:fit].reshape(fit, -1).astype(np.float32) / 255.0
    val_end = budget.train_samples
    x_batch = x_all[max(fit, val_end - ACTIVATION_BATCH) : val_end].reshape(-1, 784)
    x_batch = x_batch.astype(np.float32) / 255.0

    done: dict[tuple[str, int], _Done] = {}
    trained: list[str] = []
    for key, run in _existing_runs(folder).items():
        if key[1] in seed_list and key[0] in specs:
            done[key] = _Done(run, None, old_activations.get(run.name, {}))
            if run.status == "complete":
                done[key].train_loss = _recorded_train_loss(previous, run.name)

    def write(status: str, final: bool = False) -> ExperimentRecord:
        return _write_record(
            folder, definition, budget, policy, specs, done, diverged, seed_list, status, created,
            (wall_before + time.perf_counter() - started,
             cpu_before + time.process_time() - cpu_started), final=final, quick=quick,
        )  # fmt: skip

    diverged: set[tuple[str, int]] = set()
    if previous is not None:
        diverged = {(v.name, s) for v in previous.variants for s in v.diverged_seeds}
    todo = [
        (v, s)
        for s in seed_list
        for v in definition.variants
        if ((v.name, s) not in done or done[(v.name, s)].run.status != "complete")
        and (v.name, s) not in diverged
    ]
    record = write("interrupted")  # the folder is an experiment from now on, resumable
    status = "complete"
    total_epochs = sum(
        budget.epochs - (done[(v.name, s)].run.epochs_done if (v.name, s) in done else 0)
        for v, s in todo
    )
    with (
        _Progress(console, total_epochs, len(todo), live) as progress,
        interrupts.stop_on_signals() as stop,
    ):
        for variant, seed in todo:
            if stop.is_set():
                status = "interrupted"
                break
            label = f"{definition.name} {variant.name} seed {seed}"
            progress.starting(label)
            spec = variant_spec(definition, variant, budget, seed, policy, standardize)
            from digitlab.experiments.callbacks import (
                ActivationStatistics,
                EpochProgress,
                TrainingLoss,
            )

            y_fit = loss_targets(y_all[:fit], spec, 10)
            loss_cb = TrainingLoss(x_fit, y_fit)
            previous_done = done.get((variant.name, seed))
            stats_cb = ActivationStatistics(
                x_batch, previous_done.activations if previous_done else None
            )
            from digitlab.fastfit import StopOnRequest

            callbacks = [EpochProgress(progress.advance), StopOnRequest(stop), loss_cb]
            if definition.activation_stats:
                callbacks.append(stats_cb)
            try:
                run = _train_one(
                    spec, folder, variant.name, seed, previous_done, callbacks, data_dir, quick
                )
            except DivergedError:  # a result, not a failure
                diverged.add((variant.name, seed))
                progress.diverged(label)
                if (variant, seed) != todo[-1]:
                    write("interrupted")
                continue
            except SpecError as exc:
                write("interrupted", final=True)  # keep what is finished, say where
                raise SpecError(f"{label}: {exc}. The finished runs are kept in {folder}") from None
            done[(variant.name, seed)] = _Done(
                run, loss_cb.loss, stats_cb.values if definition.activation_stats else {}
            )
            trained.append(run.name)
            progress.finished_run(label, run)
            if run.status != "complete":
                status = "interrupted"
                break
            if (variant, seed) != todo[-1]:
                write("interrupted")  # a kill from here on loses no finished run
            if stop.is_set() and (variant, seed) != todo[-1]:
                status = "interrupted"
                break
    record = write(status, final=True)
    return Outcome(folder, record, trained)


def _train_one(
    spec, folder, variant, seed, previous: _Done | None, callbacks, data_dir, quick: bool
) -> Run:
    from digitlab import training

    if previous is not None and previous.run.status == "interrupted":
        return training.resume(previous.run, data_dir=data_dir, verbose=0, callbacks=callbacks)
    return training.train(
        spec,
        runs_dir=folder / RUNS_FOLDER,
        name=f"{variant}-seed{seed}",
        data_dir=data_dir,
        verbose=0,
        callbacks=callbacks,
        pictures=not quick,  # ~3 s a run; a report draws curves and confusion matrix itself
        calibrate=False,  # confidence thresholds: longer than the fit, and not compared here
    )


def _write_record(
    folder: Path,
    definition: Definition,
    budget: Budget,
    policy: str,
    specs: dict[str, Spec],
    done: dict[tuple[str, int], _Done],
    diverged: set[tuple[str, int]],
    seeds: list[int],
    status: str,
    created: datetime,
    seconds: tuple[float, float],
    final: bool,
    quick: bool = False,
) -> ExperimentRecord:
    """Compute the figures and the conclusion, draw the plots, write experiment.json (and the
    report, once complete)."""
    from digitlab.experiments import plots

    variants = _variant_results(definition, budget, specs, done, seeds, diverged)
    curves = _curves(definition, done, budget)
    drawn: list[str] = []
    if final and any(curves.values()):
        drawn = [p.name for p in plots.draw(folder, definition, variants, curves)]
    record = ExperimentRecord.model_validate(
        {
            "name": definition.name,
            "question": definition.question,
            "description": definition.description,
            "anchor": definition.anchor,
            "status": status,
            "created": created,
            "updated": datetime.now(),
            "seeds": seeds,
            "budget": {
                **budget.model_dump(),
                "fit_samples": budget.fit_samples,
                "quick": quick,
                "batch_sizes": sorted({s.train.batch_size for s in specs.values()}),
            },
            "learning_rate_policy": policy,
            "baseline": definition.baseline_name,
            "variants": variants,
            "conclusion": _conclusion(definition, variants, curves),
            "statistics": conclusions.STATISTICS,
            "plots": drawn,
            "definition": definition.model_dump(mode="json"),
            "wall_seconds": round(seconds[0], 2),
            "cpu_seconds": round(seconds[1], 2),
        }
    )
    write_record(folder, record)
    if final and drawn:
        write_report(folder)
    return record


def write_report(folder: Path) -> Path:
    """The experiment's report.html (`digitlab.report`), its runs found in its runs/ folder."""
    from digitlab.report import write_experiment_report

    return write_experiment_report(folder, runs_dir=folder / RUNS_FOLDER)
