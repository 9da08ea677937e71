"""One worker of a shared experiment: it claims the next cell from the study, trains it as an
ordinary run into this machine's experiment folder, and records the run in the study.

A (variant, seed) of a variant whose learning rate is tuned waits until every tuning run of
its variant is done (they were enqueued first and are claimed first, so some worker, here or
elsewhere, holds them); a worker with nothing ready polls the storage, and ends when no cell
is waiting or running anywhere. A cell whose worker died is failed and enqueued again
(`queue.fail_lost`), by whichever worker or parent sees it first.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import optuna

from digitlab.errors import DigitlabError, DivergedError, SpecError
from digitlab.experiments import plan, queue, results
from digitlab.experiments.inputs import Inputs
from digitlab.experiments.queue import CONTINUE, FAILURE, RESULT, Cell, Cells
from digitlab.experiments.runner import _Experiment, _specs, _train_one
from digitlab.experiments.schema import Budget, Definition
from digitlab.interrupts import stop_on_signals
from digitlab.runs import Run, read_run
from digitlab.schema import validate
from digitlab.tune.objective import follow_parent, stop_wanted
from digitlab.tune.storages import WORKER_ATTR, open_storage, quiet_optuna, storage_label

POLL_S = 1.0  # how often an idle worker looks for a ready cell
# Tests only: "worker<i>" makes worker i SIGKILL itself once its first cell has trained an epoch.
TEST_KILL_ENV = "DIGITLAB_EXPERIMENT_TEST_KILL"


@dataclass(frozen=True)
class Job:
    """What every worker of one experiment on this machine shares; plain values, so it
    pickles to a process."""

    study: str
    storage: str  # a database URL, or the journal file's path
    folder: str  # this machine's experiment folder: the runs go into its runs/
    data_dir: str | None


def open_study(storage: str | Path) -> tuple[optuna.storages.BaseStorage, str]:
    """The storage with the experiments' retry policy, and its label to print."""
    return open_storage(storage, retries=queue.MAX_RETRIES), storage_label(storage)


def context(setup: dict, folder: Path, data_dir: str | Path | None) -> _Experiment:
    """The experiment as the runner knows it, from the study's setup: each variant's spec,
    the budget, the digits; `runs/` of this machine's folder to train into."""
    definition = validate(Definition, setup["definition"], "the study's definition")
    budget = validate(Budget, setup["budget"], "the study's budget")
    policy, quick = setup["policy"], bool(setup["quick"])
    inputs = Inputs(budget, data_dir)
    specs = _specs(definition, budget, policy, quick, inputs)
    created = datetime.fromisoformat(setup["created"])
    experiment = _Experiment(
        folder, definition, budget, policy, quick, created, inputs, data_dir, specs
    )
    experiment.tuning = {
        v.name: results.Tuning()
        for v in definition.variants
        if plan.tunes(definition, v, policy, quick)
    }
    return experiment


def sync(experiment: _Experiment, cells: Cells) -> None:
    """Give the experiment the tuning runs done so far (anywhere), and each tuned variant
    whose grid is done the rate tuning chose. A tuning run that failed on every try counts
    as a point of the grid that did not train, shown as failed."""
    for cell, found in cells.trained.items():
        if cell.tuning and cell.variant in experiment.tuning:
            experiment.tuning[cell.variant].runs[cell.rate] = found.run
    for cell in cells.diverged:
        if cell.tuning and cell.variant in experiment.tuning:
            experiment.tuning[cell.variant].diverged.add(cell.rate)
    for cell in cells.failed:
        if cell.tuning and cell.variant in experiment.tuning:
            experiment.tuning[cell.variant].failed.add(cell.rate)
    experiment.choose_rates()


def ready(experiment: _Experiment, cell: Cell) -> bool:
    """Whether a cell can train now: a tuning run always; a seed once its variant's rate is
    chosen (or every rate diverged: the cell is then skipped)."""
    if cell.tuning or cell.variant not in experiment.tuning:
        return True
    variant = next(v for v in experiment.definition.variants if v.name == cell.variant)
    return experiment.tuning[cell.variant].finished(variant.learning_rates)


def work(job: Job, index: int = 0, stop: threading.Event | None = None) -> bool:
    """Claim and train cells until none is waiting or running anywhere, or a stop is wanted
    (`stop` set, Ctrl-C or SIGTERM, or the parent gone); True if it stopped so.

    Raises:
        DigitlabError: the storage or the study can't be opened.
    """
    storage, label = open_study(job.storage)
    study = queue.load_study(storage, job.study, label)
    experiment = context(queue.setup_of(study), Path(job.folder), job.data_dir)
    host = socket.gethostname()
    worker = {"machine": host, WORKER_ATTR: f"{host}:{os.getpid()}"}
    trained, stop = 0, stop or threading.Event()
    while not (stop.is_set() or stop_wanted()):
        queue.fail_lost(study)
        cells = queue.read_cells(study)
        sync(experiment, cells)
        claimed = queue.claim(study, lambda cell: ready(experiment, cell), worker)
        if claimed is None:
            if not cells.left:
                return False
            time.sleep(POLL_S)
            continue
        trial, cell = claimed
        with queue.beating(study, trial):
            _train(study, trial, cell, experiment, stop, first=trained == 0, index=index)
        trained += 1
    return True


def _train(
    study: optuna.Study, trial, cell: Cell, experiment: _Experiment, stop, *, first, index
) -> None:
    """Train one claimed cell and record its end in the study."""
    from digitlab.experiments.callbacks import ActivationStatistics, measuring
    from digitlab.fastfit import StopOnRequest

    variant = next(v for v in experiment.definition.variants if v.name == cell.variant)
    if variant.name in experiment.untrainable():
        queue.finish(study, trial, "skipped")  # every rate of its grid diverged
        return
    spec = experiment.spec_for(variant, cell.seed, cell.rate)
    name = f"{variant.name}-lr{cell.rate:g}" if cell.tuning else f"{variant.name}-seed{cell.seed}"
    x_fit, y_fit, x_batch = experiment.inputs.for_spec(spec)
    statistics = experiment.definition.activation_stats and not cell.tuning
    stats = ActivationStatistics(x_batch, None)
    previous = _previous(trial)
    matched = None if cell.tuning else experiment.definition.matched_loss
    history = previous.history if previous is not None else None
    callbacks = [*measuring(x_fit, y_fit, matched, history), StopOnRequest(stop)]
    callbacks += [stats] if statistics else []
    callbacks += _test_kill(index) if first else []
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        run = _train_one(spec, experiment, name, previous, callbacks)
    except DivergedError:
        queue.finish(study, trial, "diverged")
        return
    except SpecError as exc:
        queue.finish(study, trial, "error", **{FAILURE: str(exc)})
        return
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    path = str(run.path.resolve())
    if run.status != "complete":  # Ctrl-C or SIGTERM: back in the queue, to go on from here
        queue.finish(study, trial, "interrupted", path=path)
        queue.enqueue_again(
            study, trial, **{CONTINUE: {"machine": socket.gethostname(), "path": path}}
        )
        return
    activations = stats.values if statistics else {}
    queue.finish(
        study, trial, "trained", path=path, **{RESULT: queue.run_attrs(run, wall, cpu, activations)}
    )


def _previous(trial) -> Run | None:
    """The interrupted run a cell goes on from: one this machine left (its path kept in the
    trial), still there and still interrupted; None to train anew."""
    left = trial.user_attrs.get(CONTINUE) or {}
    if left.get("machine") != socket.gethostname() or not left.get("path"):
        return None
    try:
        run = read_run(left["path"])
    except DigitlabError:
        return None
    return run if run.status == "interrupted" else None


def _test_kill(index: int) -> list:
    """The `TEST_KILL_ENV` hook: a callback that SIGKILLs this worker after its first epoch,
    mid-cell, so that tests kill a worker at a known point."""
    if os.environ.get(TEST_KILL_ENV) != f"worker{index}":
        return []
    import keras

    def die(epoch, logs=None) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    return [keras.callbacks.LambdaCallback(on_epoch_end=die)]


def process(job: Job, index: int, parent: int) -> None:
    """A worker process's body: its own storage connection; it stops at the next batch on
    Ctrl-C, SIGTERM, or its parent's death."""
    quiet_optuna()
    with stop_on_signals() as stop:
        follow_parent(parent)
        try:
            stopped = work(job, index, stop)
        except DigitlabError as exc:  # one line, as the parent would print it
            print(f"Error: experiment worker {index}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    if stopped:
        raise SystemExit(130)
