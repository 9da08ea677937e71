"""An experiment on many workers: its cells in an Optuna study, trained by worker processes
on this machine and on any other that joins, its record assembled from the study.

    digitlab experiment dropout --workers 2                      # the journal in its folder
    digitlab experiment dropout --storage postgresql://... --workers 2   # on every machine

The study is named after the experiment and what it trains (`queue.study_name`), so the same
command on another machine joins it, into a folder of the same name in that machine's runs
folder; each run stays where it was trained, and the record says where (`machines`,
`run_paths`). This process starts the workers, follows the study (one line per finished
cell, from any machine), fails and re-enqueues the cells of a worker that died, and writes
experiment.json after every finished cell, then the plots and report.html once every cell
is done. Ctrl-C stops the workers at their next batch; their cells go back in the queue, and
`--resume` (here, or on any machine with `--storage`) trains what is left.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna

from digitlab.errors import DigitlabError, RunError, SpecError
from digitlab.experiments import plan, predictions, queue, results
from digitlab.experiments.inputs import Inputs
from digitlab.experiments.progress import SECONDS_PER_RUN, Progress
from digitlab.experiments.queue import Cell, Cells
from digitlab.experiments.record import (
    RECORD_FILE,
    RUNS_FOLDER,
    experiments_dir,
    find_experiment,
    locked,
    read_record,
    write_record,
)
from digitlab.experiments.runner import Outcome, _build_each, _Experiment, _specs, write_report
from digitlab.experiments.schema import Definition, ExperimentRecord
from digitlab.experiments.worker import Job, context, open_study, process, sync
from digitlab.interrupts import requested, stop_on_signals
from digitlab.runs import check_writable, claim_run_path
from digitlab.schema import validate
from digitlab.tune.storages import journal_exists, quiet_optuna, storage_label

POLL_S = 1.0  # how often the study is read for finished cells


def run_shared(
    definition: Definition,
    *,
    workers: int = 1,
    storage: str | None = None,
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
    """Run (or join, or resume) `definition` as a shared study trained by `workers` worker
    processes here; the other arguments are `run_experiment`'s.

    Args:
        workers: worker processes on this machine (≥ 1).
        storage: a database URL (postgresql://user@host/db) or a journal file that every
            machine reaches; None: the journal file `experiment.journal` in the experiment
            folder (this machine only).

    Returns:
        The `Outcome`; `interrupted` after Ctrl-C or when cells are left to other machines.

    Raises:
        SpecError: a bad budget or variant; a storage or study that is not an experiment's.
        RunError: the folder can't be written or locked; nothing to resume.
        DigitlabError: the storage can't be opened, or every worker failed.
    """
    if workers < 1:
        raise SpecError(f"--workers must be at least 1, got {workers}")
    quiet_optuna()
    sizes = {"seeds": seeds, "epochs": epochs, "train_samples": train_samples}
    with contextlib.ExitStack() as held:
        if resume is None:
            shared = _start(
                definition, quick, sizes, learning_rate_policy, storage, runs_dir, data_dir, held
            )
        else:
            shared = _resume(resume, definition.name, seeds, storage, runs_dir, held)
        experiment = _Shared.of(shared, data_dir)
        predictions.before_runs(experiment, guess, console)  # issue 21: measure, then predict
        experiment.write("interrupted")
        stopped = _follow(experiment, shared, workers, data_dir, console, live)
        cells = experiment.refresh()
        status = "interrupted" if stopped or cells.left else "complete"
        record = experiment.write(status, final=True)
    return Outcome(experiment.folder, record, experiment.trained)


def ran_on_workers(ref: str | Path, name: str, runs_dir: str | Path | None) -> bool:
    """Whether the experiment `--resume` names ran on workers (its folder has a journal)."""
    try:
        folder = find_experiment(ref, name, runs_dir)
    except RunError:
        return False  # resuming says why
    return journal_exists(folder / queue.JOURNAL_FILE)


# ------------------------------------------------------------------------- the study, opened
@dataclass
class _Opened:
    study: optuna.Study
    storage: str  # what workers open: the URL or the journal's path
    folder: Path


def _start(definition, quick, sizes, policy, storage, runs_dir, data_dir, held) -> _Opened:
    """Create the experiment's study and enqueue its cells, or join the study the same
    command made on another machine; the folder of the study's name is made here and
    locked. Every variant is checked first, and a storage that is not an experiment's is
    refused, before anything is written."""
    budget = plan.make_budget(definition, quick, **sizes)
    policy = policy or definition.learning_rate_policy
    specs = _specs(definition, budget, policy, quick, Inputs(budget, data_dir))
    plan.check_budget(budget, specs)
    _build_each(specs)
    parent, created = check_writable(experiments_dir(runs_dir)), datetime.now()
    folder = parent / f"{created:%Y%m%d-%H%M%S}-{definition.name}"  # as on other machines
    if storage is None:  # a new journal in a new folder
        folder = claim_run_path(parent, definition.name)
        storage = str(folder / queue.JOURNAL_FILE)
    opened, label = open_study(storage)
    if "://" not in storage:
        queue.check_journal_is_experiments(opened, label)
    setup = {
        "name": definition.name,
        "definition": definition.model_dump(mode="json"),
        "budget": budget.model_dump(),
        "policy": policy,
        "quick": quick,
    }
    name = queue.study_name(definition.name, setup)
    setup |= {"created": created.isoformat(), "folder": folder.name}
    study, _ = queue.create_or_join(opened, name, setup, label)
    folder = parent / queue.setup_of(study)["folder"]  # the same on every machine
    folder.mkdir(exist_ok=True)
    held.enter_context(locked(folder))
    check_writable(folder / RUNS_FOLDER)
    _grow(study, sizes["seeds"])
    queue.enqueue(study, planned_cells(queue.setup_of(study)))
    return _Opened(study, storage, folder)


def _resume(ref, name, seeds, storage, runs_dir, held) -> _Opened:
    """The study to complete: the one in the folder's journal, or (with `storage`) the
    newest study of experiment `name` there, or the one `ref` names; cells that failed on
    every try get a fresh set of tries, and `seeds` may add seeds."""
    folder = None
    if storage is None:
        folder = find_experiment(ref, name, runs_dir)
        journal = folder / queue.JOURNAL_FILE
        if not journal_exists(journal):
            raise RunError(
                f"{folder} was run in one process (it has no {queue.JOURNAL_FILE}); resume "
                "it without --workers and --storage"
            )
        storage = str(journal)
    opened, label = open_study(storage)
    found = queue.experiment_studies(opened)
    if folder is None and str(ref) != "latest":  # a study, or its folder, by name
        named = Path(ref).name
        found = [s for s in found if named in (s.study_name, _folder(s))]
    elif folder is None:
        found = [s for s in found if s.user_attrs[queue.SETUP_ATTR].get("name") == name]
    if not found:
        raise RunError(f"no {name} experiment to resume in {label}; run it without --resume first")
    study = queue.load_study(opened, found[-1].study_name, label)
    if folder is None:  # the study's folder, made on this machine if it ran elsewhere
        folder = check_writable(experiments_dir(runs_dir)) / queue.setup_of(study)["folder"]
        folder.mkdir(exist_ok=True)
    held.enter_context(locked(folder))
    check_writable(folder / RUNS_FOLDER)
    _grow(study, seeds)
    queue.enqueue(study, planned_cells(queue.setup_of(study)), again=True)
    return _Opened(study, storage, folder)


def _folder(study) -> str:
    return str(study.user_attrs[queue.SETUP_ATTR].get("folder", ""))


def _grow(study: optuna.Study, seeds: int | None) -> None:
    """More seeds than the study has: its budget grows (never shrinks)."""
    setup = queue.setup_of(study)
    if seeds is not None and seeds > setup["budget"]["seeds"]:
        setup["budget"] = {**setup["budget"], "seeds": seeds}
        study.set_user_attr(queue.SETUP_ATTR, setup)


def planned_cells(setup: dict[str, Any]) -> list[Cell]:
    """Every cell of the experiment, in the order they are claimed: the learning-rate tuning
    runs, then seed by seed."""
    definition = validate(Definition, setup["definition"], "the study's definition")
    tuning = plan.tuning_to_do(definition, setup["policy"], setup["quick"], (), ())
    cells = plan.cells_to_do(definition, setup["budget"]["seeds"], set(), set())
    return [
        *(Cell(v.name, plan.TUNING_SEED, rate) for v, rate in tuning),
        *(Cell(v.name, seed) for v, seed in cells),
    ]


# -------------------------------------------------------------------- the record, assembled
@dataclass
class _Shared(_Experiment):
    """The experiment as the runner writes it, its runs read from the study."""

    study: optuna.Study | None = None
    storage_label: str = ""
    cells: Cells = field(default_factory=Cells)

    @classmethod
    def of(cls, opened: _Opened, data_dir) -> _Shared:
        setup = queue.setup_of(opened.study)
        base = context(setup, opened.folder, data_dir)
        weights, classes = _build_each(base.specs)
        previous = _previous_seconds(opened.folder)
        shared = cls(
            base.folder, base.definition, base.budget, base.policy, base.quick, base.created,
            base.inputs, base.data_dir, base.specs, weights, classes,
            study=opened.study, storage_label=storage_label(opened.storage),
        )  # fmt: skip
        shared.tuning = base.tuning
        shared.seconds_before = (previous, 0.0)
        shared.refresh()
        return shared

    def refresh(self) -> Cells:
        """Read every cell back from the study: the runs, the diverged, the failed."""
        self.cells = cells = queue.read_cells(self.study)
        sync(self, cells)
        seeds = self.budget.seeds
        self.done = {
            (c.variant, c.seed): results.Done(f.run, None, f.activations)
            for c, f in cells.trained.items()
            if not c.tuning and c.seed < seeds
        }
        self.diverged = {(c.variant, c.seed) for c in cells.diverged if not c.tuning}
        cpu = sum(f.cpu_seconds for f in cells.trained.values())
        self.seconds_before = (self.seconds_before[0], cpu)
        return cells

    def write(self, status: str, final: bool = False) -> ExperimentRecord:
        """As the runner's, then where each run is, which seeds failed, and the storage."""
        record = super().write(status, final)
        record = _located(record, self.cells, self.study.study_name, self.storage_label)
        write_record(self.folder, record)
        if final and record.plots:
            write_report(self.folder)
        return record


def _previous_seconds(folder: Path) -> float:
    with contextlib.suppress(RunError, SpecError):
        if (folder / RECORD_FILE).is_file():
            return read_record(folder).wall_seconds
    return 0.0


def _located(record: ExperimentRecord, cells: Cells, study: str, label: str) -> ExperimentRecord:
    """The record with each run's machine and path, the seeds whose every try failed (and a
    sentence naming them), the study and its storage."""
    where = {f.run.name: f for f in cells.trained.values()}
    variants, lines = [], []
    for variant in record.variants:
        failed = sorted(c.seed for c in cells.failed if c.variant == variant.name and not c.tuning)
        rates = sorted(c.rate for c in cells.failed if c.variant == variant.name and c.tuning)
        variants.append(
            variant.model_copy(
                update={
                    "machines": tuple(where[r].machine if r in where else "" for r in variant.runs),
                    "run_paths": tuple(where[r].path if r in where else "" for r in variant.runs),
                    "failed_seeds": tuple(failed),
                }
            )
        )
        if failed:
            tries = max(len(cells.failed[Cell(variant.name, s)]) for s in failed)
            lines.append(
                f"{variant.name}: seed{'s' * (len(failed) > 1)} {', '.join(map(str, failed))} "
                f"failed on every try ({tries}); its figures and tests leave them out, and "
                "`--resume` tries them again."
            )
        if rates:
            lines.append(
                f"{variant.name}: the tuning run{'s' * (len(rates) > 1)} at learning rate "
                f"{', '.join(f'{r:g}' for r in rates)} failed on every try; the rate was chosen "
                "from the other points of its grid (the grid shows them as failed, not trained)."
            )
    return record.model_copy(
        update={
            "variants": tuple(variants),
            "conclusion": (*lines, *record.conclusion),
            "study": study,
            "storage": label,
        }
    )


# -------------------------------------------------------------------------------- the workers
def _follow(experiment: _Shared, opened: _Opened, workers: int, data_dir, console, live) -> bool:
    """Start the workers, print each cell as it finishes (on any machine), fail and retry
    the cells of a worker that died, rewrite the record after each finished cell. Returns
    True if a signal stopped it.

    Raises:
        DigitlabError: every worker ended with an error while cells were left.
    """
    processes = _workers(opened, workers if experiment.cells.left else 0, data_dir)
    left = [
        c for c in planned_cells(queue.setup_of(opened.study)) if not experiment.cells.resolved(c)
    ]
    cost = {c: _cost(experiment, c) for c in left}
    epochs = sum(experiment.specs[c.variant].train.epochs for c in left)
    reported = set(experiment.cells.trained) | experiment.cells.diverged
    buried: dict[int, str] = {}
    relayed = False
    with (
        Progress(console, sum(cost.values()), epochs, len(left), live) as progress,
        stop_on_signals(),
    ):
        for p in processes:
            p.start()
        try:
            while alive := [p for p in processes if p.is_alive()]:
                _bury(opened.study, processes, buried)
                if requested.is_set() and not relayed:
                    for p in alive:
                        p.terminate()  # SIGTERM: the worker stops at its next batch
                    relayed = True
                _report(experiment, reported, progress, cost)
                multiprocessing.connection.wait([p.sentinel for p in alive], timeout=POLL_S)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now
            for p in processes:
                p.kill()
                p.join()
        _bury(opened.study, processes, buried)
        _report(experiment, reported, progress, cost)
    errors = [p.exitcode for p in processes if p.exitcode not in (0, 130, -15)]
    if len(errors) == len(processes) and experiment.cells.left and not requested.is_set():
        experiment.write("interrupted")
        raise DigitlabError(
            f"every worker ended early ({'; '.join(buried.values())}); the finished cells are "
            "kept in the study: run the same command with --resume"
        )
    return requested.is_set()


def _workers(opened: _Opened, workers: int, data_dir) -> list:
    """The worker processes (not started): fresh interpreters, as JAX dislikes fork."""
    job = Job(
        study=opened.study.study_name,
        storage=opened.storage,
        folder=str(opened.folder),
        data_dir=None if data_dir is None else str(data_dir),
    )
    spawn = multiprocessing.get_context("spawn")
    return [
        spawn.Process(target=process, args=(job, i, os.getpid()), name=f"digitlab-experiment-{i}")
        for i in range(workers)
    ]


def _bury(study: optuna.Study, processes: list, buried: dict[int, str]) -> None:
    """The cells of workers that ended: failed, and enqueued again within the retries."""
    host = socket.gethostname()
    for p in processes:
        if p.exitcode is not None and p.pid not in buried:
            how = f"its worker (pid {p.pid}) ended with exit code {p.exitcode}"
            queue.fail_worker(study, f"{host}:{p.pid}", how)
            buried[p.pid] = f"worker pid {p.pid}: exit code {p.exitcode}"


def _cost(experiment: _Shared, cell: Cell) -> float:
    epochs = experiment.specs[cell.variant].train.epochs
    return epochs * experiment.epoch_cost(cell.variant) + SECONDS_PER_RUN


def _report(experiment: _Shared, reported: set, progress: Progress, cost: dict) -> None:
    """One line per cell finished since the last look, wherever it ran; the record is
    rewritten when any did."""
    cells = experiment.refresh()
    new = False
    for cell, found in cells.trained.items():
        if cell not in reported:
            reported.add(cell)
            for _ in range(found.run.epochs_done):
                progress.advance(cost.get(cell, SECONDS_PER_RUN) / max(found.run.epochs_done, 1))
            label = f"{cell.label(experiment.definition.name)} on {found.machine}"
            progress.finished_run(label, found.run)
            if found.machine == socket.gethostname():
                experiment.trained.append(found.run.name)
            new = True
    for cell in cells.diverged - reported:
        reported.add(cell)
        progress.diverged(cell.label(experiment.definition.name))
        new = True
    if new:
        experiment.write("interrupted")
