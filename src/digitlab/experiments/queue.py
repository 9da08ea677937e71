"""An experiment's cells as the trials of an Optuna study: enqueued once, claimed once each,
their results read back by any machine.

The study is the experiment's shared state, the same engine `tune` stands on: a journal file
in the experiment folder by default, or a database (postgresql://...) that many machines
join. Each cell (a learning-rate tuning run, then each (variant, seed)) is a trial enqueued
WAITING with the cell in its user attributes; a worker claims one by moving it to RUNNING,
which the storage grants to one process only (Optuna's own pop of an enqueued trial). The
finished cell's run (its config, metrics and per-epoch history, the seconds, the machine and
the run folder's path) is kept in the trial, so the record is assembled from the storage
with no shared filesystem.

A trial's outcome is its state and its `outcome` attribute: COMPLETE "trained" (value: the
final validation accuracy, what `tune dashboard` plots); PRUNED "diverged", "skipped" (every
learning rate of its variant diverged) or "duplicate" (a second trial of a cell that two
processes enqueued at once: the lower trial number wins); FAIL "interrupted" (Ctrl-C: a copy
is enqueued again), "error", or a dead worker's (retried up to `MAX_RETRIES` times, by
Optuna's `RetryHeartbeatStaleTrialCallback`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from digitlab.errors import RunError, SpecError
from digitlab.runs import Run
from digitlab.schema import Metrics, RunConfig
from digitlab.tune.storages import WORKER_ATTR, fail_dead_trials, process_alive

JOURNAL_FILE = "experiment.journal"  # in the experiment folder: the default storage
SETUP_ATTR = "digitlab.experiment"  # study user attribute: what the experiment is (its mark)
TUNE_SETUP_ATTR = "digitlab.setup"  # a `tune` study's mark (tune/study.py)
STUDY_PREFIX = "experiment-"
METRIC = "validation accuracy"  # a trained cell's value, named on the dashboard's axes
MAX_RETRIES = 2  # a cell whose worker died is tried again this many times, then failed
MARK_WAIT_S = 10  # a study just created by another process may not be marked yet
CLAIMED = ("machine", "worker", "started")  # attributes of one try of a cell
# trial user attributes
CELL, OUTCOME, RESULT, FAILURE = "cell", "outcome", "result", "failure"
HEARTBEAT, CONTINUE = "heartbeat", "continue"


@dataclass(frozen=True)
class Cell:
    """One run of the experiment: a tuning run (variant, rate at `TUNING_SEED`) or a
    (variant, seed) of the compared seeds."""

    variant: str
    seed: int
    rate: float | None = None

    @property
    def tuning(self) -> bool:
        return self.rate is not None

    @property
    def key(self) -> str:
        return (
            f"{self.variant} lr {self.rate!r}"
            if self.tuning
            else f"{self.variant} seed {self.seed}"
        )

    def label(self, experiment: str) -> str:
        what = f"learning rate {self.rate:g}" if self.tuning else f"seed {self.seed}"
        return f"{experiment} {self.variant} {what}"

    def attrs(self) -> dict[str, Any]:
        return {"variant": self.variant, "seed": self.seed, "rate": self.rate, "key": self.key}

    @classmethod
    def of(cls, trial: FrozenTrial) -> Cell | None:
        """The cell a trial holds; None for a trial that is not an experiment's cell."""
        found = trial.user_attrs.get(CELL)
        if not isinstance(found, dict) or "variant" not in found:
            return None
        rate = found.get("rate")
        return cls(str(found["variant"]), int(found["seed"]), None if rate is None else float(rate))


def study_name(name: str, setup: dict[str, Any]) -> str:
    """`experiment-NAME-DIGEST`: the same definition, budget (seeds apart: they may grow),
    policy and smoke flag give the same study, so the same command on another machine joins
    it; anything else is another experiment."""
    budget = {k: v for k, v in setup["budget"].items() if k != "seeds"}
    what = [setup["definition"], budget, setup["policy"], setup["quick"]]
    digest = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:8]
    return f"{STUDY_PREFIX}{name}-{digest}"


def is_experiment(study: optuna.Study | optuna.study.StudySummary | Any) -> bool:
    return isinstance(study.user_attrs.get(SETUP_ATTR), dict)


def experiment_studies(storage: optuna.storages.BaseStorage) -> list[Any]:
    """The storage's experiment studies (FrozenStudy), oldest first."""
    found = [s for s in storage.get_all_studies() if is_experiment(s)]
    return sorted(found, key=lambda s: (s.user_attrs[SETUP_ATTR].get("created", ""), s._study_id))


def check_journal_is_experiments(storage: optuna.storages.BaseStorage, label: str) -> None:
    """A journal file given as --storage must hold experiments only: a `tune` journal is
    refused (nothing is written to it).

    Raises:
        SpecError: it holds a study that is not an experiment's.
    """
    others = [s.study_name for s in storage.get_all_studies() if not is_experiment(s)]
    if others:
        raise SpecError(
            f"{label} holds the study '{others[0]}', which is not an experiment's (a `tune` "
            "study?); it is left untouched: pass an experiment's storage, or a new file"
        )


def create_or_join(
    storage: optuna.storages.BaseStorage, name: str, setup: dict[str, Any], label: str
) -> tuple[optuna.Study, bool]:
    """The experiment's study: created and marked with `setup` (True), or joined (False).

    Raises:
        SpecError: a study of that name exists and is not an experiment's (it is left as
            it is).
    """
    from sqlalchemy.exc import IntegrityError

    if not any(s.study_name == name for s in storage.get_all_studies()):
        try:
            study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        except (optuna.exceptions.DuplicatedStudyError, IntegrityError):  # another process,
            pass  # just now (on PostgreSQL the race can surface as the unique index's error)
        else:
            study.set_user_attr(SETUP_ATTR, setup)
            with warnings.catch_warnings():  # experimental in Optuna 3.2 to 5 at least
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names([METRIC])
            return study, True
    return load_study(storage, name, label), False


def load_study(storage: optuna.storages.BaseStorage, name: str, label: str) -> optuna.Study:
    """An existing experiment study, once it is marked as one.

    Raises:
        SpecError: the study is not an experiment's, or does not exist.
    """
    deadline = time.monotonic() + MARK_WAIT_S
    while True:
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            raise SpecError(f"no experiment study '{name}' in {label}") from None
        if is_experiment(study):
            return study
        foreign = TUNE_SETUP_ATTR in study.user_attrs or any(
            Cell.of(t) is None for t in study.get_trials(deepcopy=False)
        )
        if foreign or time.monotonic() > deadline:
            raise SpecError(
                f"study '{name}' in {label} is not an experiment's (a `tune` study?); it is "
                "left untouched: pass another --storage"
            )
        time.sleep(0.2)


def setup_of(study: optuna.Study) -> dict[str, Any]:
    return dict(study.user_attrs[SETUP_ATTR])


# ------------------------------------------------------------------------------ the cells
def enqueue(study: optuna.Study, cells: Iterable[Cell], *, again: bool = False) -> list[Cell]:
    """Enqueue the cells that have no trial yet (and, `again`, those that failed on every
    try: a resume gives them a fresh set of tries). Returns those enqueued."""
    states: dict[str, list[TrialState]] = {}
    for trial in study.get_trials(deepcopy=False):
        cell = Cell.of(trial)
        if cell is not None:
            states.setdefault(cell.key, []).append(trial.state)
    added = []
    for cell in cells:
        seen = states.get(cell.key, [])
        if not seen or (again and all(s == TrialState.FAIL for s in seen)):
            study.enqueue_trial({}, user_attrs={CELL: cell.attrs()})
            added.append(cell)
    return added


def claim(
    study: optuna.Study, ready: Callable[[Cell], bool], worker: dict[str, Any]
) -> tuple[FrozenTrial, Cell] | None:
    """Claim a waiting cell that is `ready` (tuning runs first, then by trial number): the
    storage moves it to RUNNING for one process only. A duplicate of a cell another trial
    already holds is pruned and passed over. None when no ready cell is waiting."""
    storage = study._storage
    waiting = [
        (trial, cell)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if (cell := Cell.of(trial)) is not None
    ]
    for trial, cell in sorted(waiting, key=lambda pair: (not pair[1].tuning, pair[0].number)):
        if not ready(cell):
            continue
        try:
            if not storage.set_trial_state_values(trial._trial_id, TrialState.RUNNING):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
        for key, value in worker.items():
            storage.set_trial_user_attr(trial._trial_id, key, value)
        if _held_elsewhere(study, trial, cell):
            storage.set_trial_user_attr(trial._trial_id, OUTCOME, "duplicate")
            storage.set_trial_state_values(trial._trial_id, TrialState.PRUNED)
            continue
        return trial, cell
    return None


def _held_elsewhere(study: optuna.Study, mine: FrozenTrial, cell: Cell) -> bool:
    """Whether another trial of the cell is trained or diverged, or was claimed first: every
    process orders the claims alike, by (start time, number), so of two racing claims one
    yields, whichever checks first."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    claimed = trials[mine.number]
    for trial in trials.values():
        if trial.number == mine.number or Cell.of(trial) != cell:
            continue
        if trial.state == TrialState.COMPLETE or trial.user_attrs.get(OUTCOME) == "diverged":
            return True
        if trial.state == TrialState.RUNNING and _claimed_at(trial) < _claimed_at(claimed):
            return True
    return False


def _claimed_at(trial: FrozenTrial) -> tuple[float, int]:
    start = trial.datetime_start
    return (start.timestamp() if start is not None else math.inf, trial.number)


def finish(study: optuna.Study, trial: FrozenTrial, outcome: str, **attrs: Any) -> None:
    """Record a claimed cell's end: its attributes, then its state (COMPLETE for a trained
    run, with its final validation accuracy; PRUNED for diverged/skipped; FAIL otherwise)."""
    storage = study._storage
    for key, value in {OUTCOME: outcome, **attrs}.items():
        storage.set_trial_user_attr(trial._trial_id, key, value)
    try:
        if outcome == "trained":
            value = _final(attrs[RESULT]["history"], "val_accuracy")
            storage.set_trial_state_values(
                trial._trial_id, TrialState.COMPLETE, [value if value is not None else 0.0]
            )
        else:
            state = TrialState.PRUNED if outcome in ("diverged", "skipped") else TrialState.FAIL
            storage.set_trial_state_values(trial._trial_id, state)
    except optuna.exceptions.UpdateFinishedTrialError:  # failed meanwhile: heartbeat lost
        pass


def enqueue_again(study: optuna.Study, trial: FrozenTrial, **attrs: Any) -> None:
    """Put an interrupted cell back in the queue (not a retry: Ctrl-C is no fault)."""
    system = {k: v for k, v in trial.system_attrs.items() if k in ("failed_trial", "retry_history")}
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.WAITING,
            user_attrs={CELL: trial.user_attrs[CELL], **attrs},
            system_attrs=system,
        )
    )


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Enqueue a dead worker's cell again, unless it has had `MAX_RETRIES` retries."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES)(study, trial)


def run_attrs(run: Run, seconds: float, cpu_seconds: float, activations: dict) -> dict[str, Any]:
    """What a trial keeps of a trained run: everything the record and plots read from it."""
    return {
        "name": run.name,
        "config": json.loads(run.config.model_dump_json()),
        "metrics": json.loads(run.metrics.model_dump_json()),
        "history": {key: list(values) for key, values in run.history.items()},
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "activations": activations,
    }


def _final(history: dict[str, list], key: str) -> float | None:
    values = history.get(key) or [None]
    value = values[-1]
    return None if value is None or not math.isfinite(value) else float(value)


# -------------------------------------------------------------------------- read back
@dataclass
class Found:
    """A trained cell read back from the storage: its run and where that run lives."""

    run: Run
    machine: str
    path: str
    cpu_seconds: float
    activations: dict


@dataclass
class Cells:
    """Every cell of the study by its state, each cell counted once (its first trained trial
    by number; a cell trained twice in a race counts once)."""

    trained: dict[Cell, Found] = field(default_factory=dict)
    diverged: set[Cell] = field(default_factory=set)
    skipped: set[Cell] = field(default_factory=set)
    running: dict[Cell, FrozenTrial] = field(default_factory=dict)
    waiting: set[Cell] = field(default_factory=set)
    failed: dict[Cell, list[FrozenTrial]] = field(default_factory=dict)  # every try failed

    def resolved(self, cell: Cell) -> bool:
        return cell in self.trained or cell in self.diverged or cell in self.skipped

    @property
    def left(self) -> int:
        """Cells still to be tried here or elsewhere: waiting or running."""
        return len(self.waiting | set(self.running))


def read_cells(study: optuna.Study) -> Cells:
    """The study's cells by state, each counted once.

    Raises:
        RunError: a trained cell's stored run is unreadable (names the trial).
    """
    cells = Cells()
    tries: dict[Cell, list[FrozenTrial]] = {}
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        cell = Cell.of(trial)
        if cell is None:
            continue
        tries.setdefault(cell, []).append(trial)
        outcome = trial.user_attrs.get(OUTCOME)
        if trial.state == TrialState.COMPLETE and cell not in cells.trained:
            cells.trained[cell] = _found(study, trial)
        elif outcome == "diverged":
            cells.diverged.add(cell)
        elif outcome == "skipped":
            cells.skipped.add(cell)
        elif trial.state == TrialState.RUNNING:
            cells.running.setdefault(cell, trial)
        elif trial.state == TrialState.WAITING:
            cells.waiting.add(cell)
    for cell, trials in tries.items():
        if cells.resolved(cell):
            cells.running.pop(cell, None)
            cells.waiting.discard(cell)
        elif cell not in cells.running and cell not in cells.waiting:
            failed = [t for t in trials if t.state == TrialState.FAIL]
            if failed:
                cells.failed[cell] = failed
    return cells


def _found(study: optuna.Study, trial: FrozenTrial) -> Found:
    result = trial.user_attrs.get(RESULT) or {}
    try:
        config = RunConfig.model_validate_json(json.dumps(result["config"]))
        metrics = Metrics.model_validate_json(json.dumps(result["metrics"]))
        history = {str(k): [float(x) for x in v] for k, v in result["history"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(
            f"trial {trial.number} of study '{study.study_name}' holds no readable run "
            f"({type(exc).__name__}); it was not written by this version of digitlab"
        ) from None
    path = str(trial.user_attrs.get("path") or result.get("name", ""))
    run = Run(path=Path(path), config=config, history=history, metrics=metrics)
    machine = str(trial.user_attrs.get("machine", ""))
    return Found(
        run, machine, path, float(result.get("cpu_seconds", 0.0)), result.get("activations") or {}
    )


# --------------------------------------------------------------------------------- faults
def fail_worker(study: optuna.Study, worker: str, reason: str) -> list[int]:
    """Fail the cells `worker` (host:pid, known dead) was running and enqueue each again,
    within `MAX_RETRIES`. Returns the trial numbers failed."""
    numbers = fail_dead_trials(study, worker, reason)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
        if trial.number in numbers:
            retry(study, trial)
    return numbers


def fail_lost(study: optuna.Study) -> list[int]:
    """Fail the running cells whose worker is gone and enqueue them again (within
    `MAX_RETRIES`): on a database, those whose heartbeat stopped on any machine (Optuna's
    `fail_stale_trials`, whose callback retries them); everywhere, those of a process of this
    host that no longer runs. Returns the trial numbers failed here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    host, numbers = socket.gethostname(), []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(trial.user_attrs.get(WORKER_ATTR, ""))
        worker_host, _, pid = worker.rpartition(":")
        mine = worker_host == host and pid.isdigit()
        if mine and not process_alive(int(pid), since=trial.datetime_start):
            numbers += fail_worker(study, worker, "its worker process ended")
    return numbers


@contextlib.contextmanager
def beating(study: optuna.Study, trial: FrozenTrial) -> Iterator[None]:
    """While a cell trains: every `HEARTBEAT_INTERVAL_S`, Optuna's heartbeat (a database
    fails a trial silent for `HEARTBEAT_GRACE_S`) and the `heartbeat` attribute, the time
    `digitlab experiment status` shows the age of."""
    from digitlab.tune import storages

    storage, stop = study._storage, threading.Event()
    beats = isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a lost connection: the next beat retries
                if beats:
                    storage.record_heartbeat(trial._trial_id)
                storage.set_trial_user_attr(trial._trial_id, HEARTBEAT, _now())
            if stop.wait(storages.HEARTBEAT_INTERVAL_S):
                return

    thread = threading.Thread(target=beat, name="digitlab-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
