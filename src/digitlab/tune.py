"""Hyperparameter search with Optuna: the notebook's closing "Hyper Parameter tuning : )".

A study searches a space of MLPs (hidden layers, units, activation, dropout, optimizer,
learning rate and its schedule, batch size) with Optuna's TPE sampler. Each trial trains in
memory on the training set less a validation split, reports the validation accuracy after
every epoch and is pruned when it falls behind earlier trials. The test set is never looked
at to choose.

At the end the best trial is trained once more through `digitlab.training.train`, with the
same seed, which writes a normal run directory that `evaluate`, `predict` and `serve` read. The
best trial may have run in another process or on another machine; its parameters and the
seed are all it takes to rebuild it, so nothing but numbers travels through the storage.

A study lives in a storage that several processes share: by default a journal file in the
runs folder (Optuna's JournalFileBackend with a lock file; Optuna advises against SQLite for
parallel use), or a database URL such as postgresql://user@host/db that many machines join.
Re-running the same command resumes the study: `trials` is the study's target, not an
increment, so an interrupted search tops up to it and machines sharing a study stop together.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import socket
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.live import Live
from rich.table import Table

from digitlab.config import (
    TrainConfig,
    validate_train_config,
)
from digitlab.errors import DigitlabError, SpecError
from digitlab.files import atomic_path, write_text
from digitlab.runs import Run, default_runs_dir, load_run
from digitlab.search_space import (
    SearchSpace,
    check_space,
    describe,
    preset_point,
    spec_for_trial,
)

DEFAULT_STUDY = "digitlab"
JOURNAL_FILE = "tune.journal"  # in the runs folder: every study of that folder, one log
PRUNERS = ("median", "hyperband", "none")
CONNECT_TIMEOUT_S = 10  # a database that doesn't answer must not hang the command
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)  # what counts towards --trials
SETUP_ATTR = "digitlab.setup"  # study user attribute: the space and data a study was made with
BEST_RUN_ATTR = "digitlab.best_run"
WORKER_ATTR = "worker"  # trial user attribute: host:pid of the process that ran it


# ------------------------------------------------------------------------------------ storage
def parse_duration(text: str) -> float:
    """Seconds in a duration such as `90`, `90s`, `30m`, `1.5h` or `1h30m`.

    Raises:
        DigitlabError: the text is not a positive duration.
    """
    compact = text.strip().lower().replace(" ", "")
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd]?)", compact)
    seconds = sum(float(n) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[u] for n, u in parts)
    if not parts or "".join(n + u for n, u in parts) != compact or not seconds > 0:
        raise DigitlabError(f"a duration looks like 90s, 30m, 1.5h or 1h30m; got '{text}'")
    return seconds


def storage_label(storage: str | Path | None, runs_dir: str | Path | None = None) -> str:
    """Where a study lives, fit to print: the journal path, or the URL without its password."""
    if storage is None or "://" not in str(storage):
        return str(_journal_path(storage, runs_dir))
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(str(storage)).render_as_string(hide_password=True)
    except sqlalchemy.exc.ArgumentError:
        return str(storage).split("@")[-1]


def _journal_path(storage: str | Path | None, runs_dir: str | Path | None) -> Path:
    if storage is not None:
        return Path(storage)
    return Path(runs_dir if runs_dir is not None else default_runs_dir()) / JOURNAL_FILE


def open_storage(
    storage: str | Path | None = None, runs_dir: str | Path | None = None
) -> optuna.storages.BaseStorage:
    """Open the storage a study lives in.

    Args:
        storage: None for the journal file `<runs_dir>/tune.journal`; a path for a journal
            file elsewhere (e.g. on a shared disk); or a database URL with `://`, such as
            `postgresql://user@host/db`, that many machines can reach.
        runs_dir: the runs folder (default `$DIGITLAB_RUNS_DIR` or `./runs`).

    Raises:
        DigitlabError: the database cannot be reached or its driver is missing.
    """
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    if storage is None or "://" not in str(storage):
        path = _journal_path(storage, runs_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        # An O_EXCL lock file next to the journal: safe for processes on one machine and
        # on NFSv3+; a lock left by a killed process is broken after 30 s.
        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        return JournalStorage(backend)

    import sqlalchemy

    url, label = _database_url(str(storage)), storage_label(storage)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except ImportError as exc:
        driver = getattr(exc.__cause__, "name", None) or exc.name or "its driver"
        raise DigitlabError(
            f"the storage {label} needs the database driver '{driver}', which is not "
            "installed (for PostgreSQL: pip install 'digitlab[postgres]')"
        ) from None
    except sqlalchemy.exc.NoSuchModuleError:
        raise DigitlabError(
            f"unknown kind of database in {label}; use e.g. postgresql://user@host/db"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DigitlabError(
            f"cannot open the study storage {label}: {reason}; "
            "check the URL and that the database server is running and reachable"
        ) from None


def _database_url(url: str) -> str:
    """`postgresql://` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only it is here."""
    import importlib.util

    find = importlib.util.find_spec
    if url.startswith("postgresql://") and find("psycopg") is None and find("psycopg2"):
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


# ---------------------------------------------------------------------------------- objective
class _Objective:
    """Trains one trial's network in memory; the data is loaded once per process."""

    def __init__(self, space: SearchSpace, train: TrainConfig, data_dir: str | Path | None):
        from digitlab.data import class_names, load_dataset

        self.space, self.train = space, train
        self.num_classes = len(class_names(train.dataset))
        (x, y), _ = load_dataset(train.dataset, data_dir=data_dir)  # the test set stays unused
        n = train.train_samples or len(x)
        # As training._prepare_training_data: flat uint8, scaled by fastfit in each batch
        self.x, self.y = x[:n].reshape(-1, 784), y[:n]
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, trial: optuna.Trial) -> float:
        import keras

        from digitlab import fastfit
        from digitlab.model import PIXEL_SCALE, build_model, compile_model

        trial.set_user_attr(WORKER_ATTR, self.worker)
        spec = spec_for_trial(trial, self.space, self.train, num_classes=self.num_classes)
        keras.backend.clear_session()  # drop the previous trial's model and compiled steps
        keras.utils.set_random_seed(spec.train.seed)  # as train() does, so the best rebuilds
        model = build_model(spec, num_classes=self.num_classes)
        compile_model(model, spec, num_classes=self.num_classes)

        def report(epoch: int, logs: dict[str, float]) -> None:
            trial.report(float(logs["val_accuracy"]), step=epoch + 1)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch + 1}")

        def check_stop(batch: int, logs: dict[str, float]) -> None:
            if _stop.is_set():
                raise Stopped(f"trial {trial.number} stopped by a signal")

        # The same call as training._fit makes: train() rebuilds the best trial from its
        # params and seed, and must reach the same weights and score.
        history = fastfit.fit(
            model,
            self.x,
            self.y,
            batch_size=spec.train.batch_size,
            epochs=spec.train.epochs,
            validation_split=spec.train.validation_split,  # the last fraction, unshuffled
            callbacks=[
                keras.callbacks.LambdaCallback(on_epoch_end=report, on_train_batch_end=check_stop)
            ],
            verbose=0,
            seed=spec.train.seed,
            input_scale=PIXEL_SCALE,
        )
        return float(history["val_accuracy"][-1])


def _make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        # Stop a trial whose accuracy after an epoch is below the median of earlier trials
        # after the same epoch, once 5 trials have finished.
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()


def _sampler(seed: int, worker: int, finished: int) -> optuna.samplers.TPESampler:
    """TPE, seeded per worker, per host and per restart, so no two draw the same trials."""
    import numpy as np

    host = zlib.crc32(socket.gethostname().encode())
    sequence = np.random.SeedSequence([seed, worker, finished, host])
    # constant_liar: running trials count as bad ones, so parallel workers spread out
    return optuna.samplers.TPESampler(seed=int(sequence.generate_state(1)[0]), constant_liar=True)


def _quiet() -> None:
    # The live table says it better; and a Ctrl-C'd trial is no failure worth a traceback.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _setup(space: SearchSpace, train: TrainConfig) -> dict[str, Any]:
    keys = ("dataset", "train_samples", "validation_split", "seed")
    return {"space": space.to_dict(), "train": {key: getattr(train, key) for key in keys}}


def _open_study(
    name: str, storage, space: SearchSpace, train: TrainConfig, pruner: str, worker: int = 0
) -> optuna.Study:
    """Create the study, or load it and check it was made with the same space and data."""
    study = optuna.create_study(
        study_name=name, storage=storage, direction="maximize", load_if_exists=True,
        sampler=optuna.samplers.RandomSampler(),  # replaced below, once the trials are known
        pruner=_make_pruner(pruner, space.epochs),
    )  # fmt: skip
    setup = _setup(space, train)
    stored = study.user_attrs.get(SETUP_ATTR)
    if stored is None:
        study.set_user_attr(SETUP_ATTR, setup)
    elif stored != setup:
        diffs = [
            f"{key} {stored[part].get(key)} → {value}"
            for part in ("space", "train")
            for key, value in setup[part].items()
            if stored[part].get(key) != value
        ]
        raise SpecError(
            f"study '{name}' was started with other settings ({'; '.join(diffs)}); "
            "re-run it with the same options, or give a new --study name"
        )
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    study.sampler = _sampler(train.seed, worker, finished)
    return study


class Stopped(Exception):
    """A trial cut short by Ctrl-C or SIGTERM; Optuna records it as failed."""


_stop = threading.Event()  # set by the first Ctrl-C or SIGTERM; checked between batches


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Make Ctrl-C and SIGTERM stop the search between batches, not wherever Python is.

    A KeyboardInterrupt raised wherever Python happens to be can land in a finalizer, where
    it is swallowed, or inside JAX; a flag that fastfit's batch callback checks (every
    compiled chunk of batches, about 2 s) ends the trial cleanly.
    A second Ctrl-C interrupts at once.
    """

    def ask(signum, frame):
        _stop.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    _stop.clear()
    try:
        previous = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_between_trials(study: optuna.Study, trial: FrozenTrial) -> None:
    if _stop.is_set():
        study.stop()


@dataclass(frozen=True)
class _Job:
    """What every worker of one `tune` call shares; plain values, so it pickles to a process."""

    study: str
    storage: str | None
    runs_dir: str | None
    space: SearchSpace
    train: TrainConfig
    pruner: str
    target: int | None  # the study's target of finished trials, across all workers and hosts
    timeout: float | None
    data_dir: str | None


def _search(job: _Job, index: int, trials: int | None) -> bool:
    """Run up to `trials` trials of the study (None: until the target or the timeout).

    Returns True if a signal stopped it.
    """
    storage = open_storage(job.storage, job.runs_dir)
    study = _open_study(job.study, storage, job.space, job.train, job.pruner, index)
    objective = _Objective(job.space, job.train, job.data_dir)
    callbacks = [_stop_between_trials]
    if job.target is not None:  # other machines may be filling the study too
        callbacks.append(optuna.study.MaxTrialsCallback(job.target, FINISHED))
    if not _stop.is_set():  # a signal may come while the data loads
        with contextlib.suppress(Stopped):  # Optuna has recorded the trial as failed
            study.optimize(objective, n_trials=trials, timeout=job.timeout, callbacks=callbacks)
    return _stop.is_set()


def _worker(job: _Job, index: int, trials: int | None) -> None:
    """One worker process: its own storage connection, its share of the trials."""
    _quiet()
    with _stop_on_signals():  # a terminal's Ctrl-C reaches every process of the group
        stopped = _search(job, index, trials)
    if stopped:
        raise SystemExit(130)


def _run_workers(job: _Job, workers: int, remaining: int | None) -> bool:
    """Start `workers` processes sharing the study and wait for them; True if interrupted."""
    context = multiprocessing.get_context("spawn")  # fresh interpreters: JAX dislikes fork
    shares: list[int | None] = [None] * workers
    if remaining is not None:
        shares = [remaining // workers + (i < remaining % workers) for i in range(workers)]
    processes = [
        context.Process(target=_worker, args=(job, i, share), name=f"digitlab-tune-{i}")
        for i, share in enumerate(shares)
        if share != 0
    ]
    for process in processes:
        process.start()
    relayed = False
    try:
        while alive := [p for p in processes if p.is_alive()]:
            if _stop.is_set() and not relayed:  # Ctrl-C or SIGTERM here: pass it on
                for process in alive:
                    process.terminate()  # SIGTERM: the worker stops between batches
                relayed = True
            multiprocessing.connection.wait([p.sentinel for p in alive], timeout=0.2)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now
        for process in processes:
            process.kill()
            process.join()
    interrupted = _stop.is_set()
    failed = [p for p in processes if p.exitcode not in (0, 130)]
    if failed and not interrupted:
        raise DigitlabError(
            f"{len(failed)} of {len(processes)} tuning workers stopped with exit code "
            f"{failed[0].exitcode}; the error is printed above"
        )
    return interrupted or any(p.exitcode != 0 for p in processes)


@contextlib.contextmanager
def _live(study: optuna.Study, console: Console | None) -> Iterator[None]:
    if console is None:
        yield
        return
    with Live(TrialsView(study), console=console, refresh_per_second=1):
        yield
    if not console.is_terminal:
        console.line()  # Live ends on the table's last line when it isn't drawing live


# --------------------------------------------------------------------------------------- tune
@dataclass
class TuneResult:
    """What a `tune` call leaves: the study's trials, the best, and the run saved from it."""

    study: str
    storage: str
    trials: list[FrozenTrial]
    best: FrozenTrial | None
    run: Run | None
    interrupted: bool
    seconds: float
    new_trials: int
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> list[str]:
        """Lines for a person: counts, the best trial and its run, how to go on."""
        words = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}
        counts = ", ".join(
            f"{n} {words.get(state, state.lower())}" for state, n in self.counts.items() if n
        )
        lines = [
            f"study {self.study} ({self.storage}): {len(self.trials)} trials "
            f"({counts or 'none'}), {self.new_trials} new in {_duration(self.seconds)}"
        ]
        if self.best is not None:
            lines.append(
                f"best: trial {self.best.number}, validation accuracy {self.best.value:.2%}: "
                f"{describe(self.best.params)}"
            )
        if self.run is not None:
            accuracy = self.run.metrics.get("test_accuracy")
            lines.append(
                f"saved as run {self.run.path}"
                + (f" (test accuracy {accuracy:.2%})" if accuracy is not None else "")
            )
        if self.interrupted:
            lines.append("interrupted: run the same command again to continue the study")
        return lines


def tune(
    study: str = DEFAULT_STUDY,
    *,
    space: SearchSpace | None = None,
    trials: int | None = 50,
    timeout: float | None = None,
    workers: int = 1,
    storage: str | Path | None = None,
    dataset: str = "mnist",
    train_samples: int | None = None,
    validation_split: float = 0.1,
    seed: int = 0,
    pruner: str = "median",
    warm_start: bool = True,
    save_best: bool = True,
    runs_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    console: Console | None = None,
) -> TuneResult:
    """Search networks for the highest validation accuracy; save the best as a run.

    With `workers` > 1 the workers are spawned processes that import the caller's main
    module: call `tune` from a script under `if __name__ == "__main__":`. For a given seed,
    the trials a study draws are the same on the same machine (the host name seeds the
    sampler too, so that machines joining one study don't draw the same trials).

    Args:
        study: the study's name; the same name in the same storage resumes or joins it.
        space: what to search (default: `SearchSpace()`, issue 5's table, 10 epochs).
        trials: the study's target of finished (complete or pruned) trials; a resumed study
            runs only the rest. None: no limit (stop with `timeout` or Ctrl-C).
        timeout: seconds after which each worker starts no new trial.
        workers: worker processes on this machine; 1 runs in this process.
        storage: None (journal file in `runs_dir`), a journal file path, or a database URL.
        dataset, train_samples, validation_split, seed: the fixed training setup; every
            trial trains the first `train_samples` digits less the last `validation_split`
            of them, from the same `seed`.
        pruner: "median" (default), "hyperband" or "none".
        warm_start: a new study's first trial is the `mlp` preset's network (when the space
            holds it), so the search starts from a known good MLP.
        save_best: train the best trial again with `train()` and save it as a run.
        runs_dir: where the journal and the best run go (default `$DIGITLAB_RUNS_DIR`, ./runs).
        data_dir: a folder with the dataset files, as for `load_dataset`.
        console: a Rich console to draw the live table of trials on; None draws nothing.

    Returns:
        A `TuneResult`; `interrupted` is set after Ctrl-C or SIGTERM, and then no run is saved.

    Raises:
        SpecError: bad space, options, or a study started with other settings.
        DigitlabError: the storage cannot be opened, or a worker crashed.
    """
    from digitlab.data import class_names, fetch_dataset

    space = check_space(space or SearchSpace(), "the search space")
    if trials is not None and trials < 1:
        raise SpecError(f"trials must be at least 1, got {trials}")
    if timeout is not None and not timeout > 0:
        raise SpecError(f"timeout must be positive, got {timeout}")
    if workers < 1:
        raise SpecError(f"workers must be at least 1, got {workers}")
    if pruner not in PRUNERS:
        raise SpecError(f"unknown pruner '{pruner}'; valid pruners: {', '.join(PRUNERS)}")
    if not 0 < validation_split < 1:
        raise SpecError(f"tuning needs a validation split in (0, 1), got {validation_split}")
    train = validate_train_config(
        TrainConfig(dataset=dataset, train_samples=train_samples,
                    validation_split=validation_split, seed=seed, epochs=space.epochs)
    )  # fmt: skip
    class_names(dataset)  # an unknown dataset is refused before the study is touched
    _quiet()
    label = storage_label(storage, runs_dir)
    the_study = _open_study(study, open_storage(storage, runs_dir), space, train, pruner)
    fetch_dataset(dataset, data_dir=data_dir)  # once, here, rather than racing in each worker
    start_point = preset_point(space) if warm_start else None
    if start_point is not None and not the_study.get_trials(deepcopy=False):
        # skip_if_exists: another machine starting the same study at once enqueues it too
        the_study.enqueue_trial(start_point, skip_if_exists=True)

    before = len(the_study.get_trials(deepcopy=False, states=FINISHED))
    remaining = None if trials is None else max(trials - before, 0)
    start = time.perf_counter()
    interrupted = False
    if remaining != 0:
        job = _Job(study, _str(storage), _str(runs_dir), space, train, pruner, trials, timeout,
                   _str(data_dir))  # fmt: skip
        with _live(the_study, console), _stop_on_signals():
            if workers == 1:
                try:
                    interrupted = _search(job, 0, remaining)
                except KeyboardInterrupt:  # a second Ctrl-C, while the first was handled
                    interrupted = True
            else:
                interrupted = _run_workers(job, workers, remaining)
    seconds = time.perf_counter() - start

    all_trials = the_study.get_trials()
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
    run = None
    if best is not None and save_best and not interrupted:
        run = _save_best(the_study, best, space, train, runs_dir, data_dir)
        interrupted = run.status != "complete"
    return TuneResult(
        study=study,
        storage=label,
        trials=all_trials,
        best=best,
        run=run,
        interrupted=interrupted,
        seconds=seconds,
        new_trials=len([t for t in all_trials if t.state in FINISHED]) - before,
        counts={s.name: sum(t.state == s for t in all_trials) for s in TrialState},
    )


def _str(path: str | Path | None) -> str | None:
    return None if path is None else str(path)


def _save_best(study, best, space, train, runs_dir, data_dir) -> Run:
    """The best trial as a run: trained again by `train()` from its params and the seed."""
    from digitlab.data import class_names
    from digitlab.training import train as train_run

    saved = study.user_attrs.get(BEST_RUN_ATTR) or {}
    if saved.get("trial") == best.number and Path(saved.get("path", "")).is_dir():
        return load_run(saved["path"])  # already saved by an earlier call on this machine
    spec = spec_for_trial(
        optuna.trial.FixedTrial(best.params),
        space,
        train,
        name=f"{study.study_name}-trial{best.number}",
        num_classes=len(class_names(train.dataset)),
    )
    spec = dataclasses.replace(
        spec,
        description=f"best of study '{study.study_name}': trial {best.number}, validation "
        f"accuracy {best.value:.4f}; {spec.description}",
    )
    run = train_run(spec, runs_dir=runs_dir, data_dir=data_dir, verbose=0)
    if run.status == "complete":  # not cut short by Ctrl-C: the next call may reuse it
        study.set_user_attr(BEST_RUN_ATTR, {"trial": best.number, "path": str(run.path.resolve())})
    return run


# ---------------------------------------------------------------------------------- live view
def _duration(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class TrialsView:
    """A Rich renderable of a study's trials, read from the storage each time it is drawn.

    Used by `tune` as the live table; it reads only the storage, so it shows the trials of
    every worker, and of other machines that share the study.
    """

    def __init__(self, study: optuna.Study, rows: int = 20):
        self.study, self.rows = study, rows

    def __rich__(self) -> Table:
        trials = self.study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = max(complete, key=lambda t: (t.value, -t.number)) if complete else None
        counts = {s: sum(t.state == s for t in trials) for s in TrialState}
        title = (
            f"study {self.study.study_name}: {counts[TrialState.COMPLETE]} complete · "
            f"{counts[TrialState.PRUNED]} pruned · {counts[TrialState.RUNNING]} running"
            + (f" · {counts[TrialState.FAIL]} failed" if counts[TrialState.FAIL] else "")
            + (f" · best {best.value:.2%} (trial {best.number})" if best else "")
        )
        table = Table(title=title)
        for name, width in (("trial", 5), ("state", 8), ("val acc", 7), ("epochs", 6), ("time", 7)):
            table.add_column(name, no_wrap=True, min_width=width)
        table.add_column("params")
        now = datetime.now()
        for trial in trials[-self.rows :]:
            steps = trial.intermediate_values
            value = trial.value if trial.value is not None else steps.get(max(steps, default=0))
            started = trial.datetime_start or now
            table.add_row(
                str(trial.number),
                trial.state.name.lower(),
                f"{value:.2%}" if value is not None else "–",
                str(max(steps, default=0)),
                _duration(((trial.datetime_complete or now) - started).total_seconds()),
                describe(trial.params),
                style="bold" if trial is best else None,
            )
        return table


# ------------------------------------------------------------------------------------- report
REPORT_PLOTS = ("optimization_history.png", "param_importances.png", "parallel_coordinate.png")
TOP_TRIALS_CSV = "top_trials.csv"
TOP_TRIALS_MD = "top_trials.md"


def report(
    study: str = DEFAULT_STUDY,
    *,
    storage: str | Path | None = None,
    runs_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    top: int = 10,
) -> list[Path]:
    """Write a study's plots (history, importances, parallel coordinates) and top trials.

    Args:
        study: the study's name.
        storage, runs_dir: where it lives, as for `tune`.
        out_dir: the folder to write (default `<runs_dir>/tune-report-<study>`).
        top: how many of the best complete trials the table lists.

    Returns:
        The paths written. Parameter importances need complete trials with different values
        and are left out before that.

    Raises:
        DigitlabError: no such study in the storage, or it has no complete trial yet.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as views

    _quiet()
    label = storage_label(storage, runs_dir)
    if "://" not in str(storage) and not _journal_path(storage, runs_dir).is_file():
        raise DigitlabError(f"no studies in {label} yet; start one with `digitlab tune`")
    if top < 1:
        raise DigitlabError(f"--top must be at least 1, got {top}")
    opened = open_storage(storage, runs_dir)
    try:
        the_study = optuna.load_study(study_name=study, storage=opened)
    except KeyError:
        names = optuna.get_all_study_names(opened)
        raise DigitlabError(
            f"no study '{study}' in {label}; studies there: {', '.join(names) or 'none'}"
        ) from None
    complete = the_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise DigitlabError(f"study '{study}' has no complete trial yet; run `digitlab tune`")
    root = Path(runs_dir) if runs_dir is not None else default_runs_dir()
    out = Path(out_dir) if out_dir is not None else root / f"tune-report-{study}"

    target = "validation accuracy"
    always = ["hidden_layers", "units_1", "dropout_1", "activation", "optimizer",
              "learning_rate", "learning_rate_schedule", "batch_size"]  # fmt: skip  # every trial
    drawn = {
        REPORT_PLOTS[0]: lambda: views.plot_optimization_history(the_study, target_name=target),
        REPORT_PLOTS[2]: lambda: views.plot_parallel_coordinate(
            the_study, params=[p for p in always if p in complete[0].params], target_name=target
        ),
    }
    if len({t.value for t in complete}) >= 2:  # importances explain differences in value
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        drawn[REPORT_PLOTS[1]] = lambda: views.plot_param_importances(
            the_study, evaluator=evaluator, target_name=target
        )
    written = []
    for name, draw in drawn.items():
        with warnings.catch_warnings():  # e.g. a parameter the space fixes: a flat axis
            warnings.simplefilter("ignore", UserWarning)
            figure = draw().figure
        figure.set_size_inches(11, 6)
        figure.tight_layout()
        with atomic_path(out / name) as tmp:
            figure.savefig(tmp, format="png", dpi=100)
        plt.close(figure)
        written.append(out / name)
    written += _write_top_trials(the_study, complete, out, top, label)
    return written


def _write_top_trials(study, complete, out: Path, top: int, label: str) -> list[Path]:
    ranked = sorted(complete, key=lambda t: (-t.value, t.number))[:top]
    header = ["rank", "trial", "val_accuracy", "hidden_layers", "units", "activation",
              "dropout", "optimizer", "learning_rate", "learning_rate_schedule", "batch_size",
              "seconds"]  # fmt: skip
    rows = []
    for rank, trial in enumerate(ranked, start=1):
        p, depth = trial.params, trial.params["hidden_layers"]
        rows.append([
            rank, trial.number, f"{trial.value:.4f}", depth,
            "-".join(str(p[f"units_{i}"]) for i in range(1, depth + 1)), p["activation"],
            "-".join(f"{p[f'dropout_{i}']:.2f}" for i in range(1, depth + 1)), p["optimizer"],
            f"{p['learning_rate']:.2e}", p.get("learning_rate_schedule", "constant"),
            p["batch_size"], f"{trial.duration.total_seconds():.1f}",
        ])  # fmt: skip
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows([header, *rows])
    counts = {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in FINISHED}
    lines = [
        f"# Study {study.study_name}: top {len(rows)} trials",
        "",
        f"Storage: {label}. Trials: {counts['complete']} complete, {counts['pruned']} pruned. "
        "Validation accuracy on the held-out end of the training set; the test set is not used.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(map(str, row)) + " |" for row in rows),
    ]
    return [
        write_text(out / TOP_TRIALS_CSV, buffer.getvalue()),
        write_text(out / TOP_TRIALS_MD, "\n".join(lines) + "\n"),
    ]
