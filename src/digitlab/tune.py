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

A study lives in a storage that several processes and machines share (`digitlab.studies`:
a journal file in the runs folder by default, or a PostgreSQL URL). Re-running the same
command resumes the study: `trials` is the study's target, not an increment, so an
interrupted search tops up to it and machines sharing a study stop together.

A worker that dies mid-trial (killed, out of memory) leaves no trial RUNNING: its parent
fails the trials it was running and says so; a later call fails the trials of vanished
processes of this host, and a database's heartbeat those of any machine. Workers die with
their parent: on Linux the kernel sends them SIGTERM when it dies, and everywhere they check
between batches and trials that their parent is still the one that started them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import re
import signal
import socket
import sys
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.live import Live

from digitlab.data import DEFAULT_DATASET
from digitlab.errors import DigitlabError, SpecError
from digitlab.interrupts import die_with_parent, requested, stop_on_signals
from digitlab.runs import Run, load_run
from digitlab.schema import PRUNERS, TrainConfig, unknown, validate
from digitlab.search_space import (
    SearchSpace,
    describe,
    preset_point,
    spec_for_trial,
)
from digitlab.studies import (
    DEFAULT_STUDY,
    FINISHED,
    WORKER_ATTR,
    fail_dead_trials,
    fail_orphaned_trials,
    open_storage,
    quiet_optuna,
    storage_label,
)
from digitlab.tune_report import TrialsView, format_duration

SETUP_ATTR = "digitlab.setup"  # study user attribute: the space and data a study was made with
BEST_RUN_ATTR = "digitlab.best_run"
# Tests only: "worker<i>" makes worker i SIGKILL itself as its first trial starts; "parent"
# makes worker 0 SIGKILL the parent once every worker is inside a trial.
TEST_KILL_ENV = "DIGITLAB_TUNE_TEST_KILL"
_parent_pid: int | None = None  # in a worker process: the pid of the `tune` that started it


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


# ---------------------------------------------------------------------------------- objective
class _Objective:
    """Trains one trial's network in memory; the data is loaded once per process."""

    def __init__(
        self,
        space: SearchSpace,
        train: TrainConfig,
        data_dir: str | Path | None,
        index: int = 0,
        workers: int = 1,
    ):
        from digitlab.data import class_names, load_dataset

        self.space, self.train = space, train
        self.num_classes = len(class_names(train.dataset))
        (x, y), _ = load_dataset(train.dataset, data_dir=data_dir)  # the test set stays unused
        n = train.train_samples or len(x)
        # As training._prepare_training_data: flat uint8, scaled by fastfit in each batch
        self.x, self.y = x[:n].reshape(-1, x[0].size), y[:n]
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.index, self.workers, self.trials_started = index, workers, 0

    def __call__(self, trial: optuna.Trial) -> float:
        import keras

        from digitlab import fastfit
        from digitlab.model import PIXEL_SCALE, build_model, compile_model

        trial.set_user_attr(WORKER_ATTR, self.worker)  # first: whose trial it is, if it dies
        self.trials_started += 1
        if os.environ.get(TEST_KILL_ENV) and self.trials_started == 1:
            self._test_kill(trial)
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
            if _stop_wanted():
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

    def _test_kill(self, trial: optuna.Trial) -> None:
        """The `TEST_KILL_ENV` hook, so that tests kill processes at a known point."""
        what = os.environ[TEST_KILL_ENV]
        if what == f"worker{self.index}":
            os.kill(os.getpid(), signal.SIGKILL)
        if what == "parent" and _parent_pid is not None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # until every worker is inside a trial
                running = trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if len({t.user_attrs.get(WORKER_ATTR) for t in running} - {None}) >= self.workers:
                    break
                time.sleep(0.05)
            if self.index == 0 and os.getppid() == _parent_pid:
                os.kill(_parent_pid, signal.SIGKILL)
            while time.monotonic() < deadline and os.getppid() == _parent_pid:
                time.sleep(0.05)  # train on only once the parent is gone


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


def _stop_wanted() -> bool:
    """Ctrl-C or SIGTERM came, or (in a worker) the parent that started it is gone."""
    return requested.is_set() or (_parent_pid is not None and os.getppid() != _parent_pid)


def _stop_between_trials(study: optuna.Study, trial: FrozenTrial) -> None:
    if _stop_wanted():
        study.stop()


def _die_with_parent(parent: int) -> None:
    """Make this worker stop when its parent dies, rather than fill the study on its own.

    On Linux the kernel sends SIGTERM at the parent's death (prctl PR_SET_PDEATHSIG), which
    stops the running trial at its next batch; everywhere, `_stop_wanted` sees that the
    parent pid changed, between batches and trials.
    """
    global _parent_pid
    _parent_pid = parent
    arm = die_with_parent(parent, signal.SIGTERM, orphaned=requested.set)
    if arm is not None:
        arm()
    elif os.getppid() != parent:  # it died already
        requested.set()


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
    workers: int = 1


def _search(job: _Job, index: int, trials: int | None) -> bool:
    """Run up to `trials` trials of the study (None: until the target or the timeout).

    Returns True if a signal stopped it.
    """
    storage = open_storage(job.storage, job.runs_dir)
    study = _open_study(job.study, storage, job.space, job.train, job.pruner, index)
    objective = _Objective(job.space, job.train, job.data_dir, index, job.workers)
    callbacks = [_stop_between_trials]
    if job.target is not None:  # other machines may be filling the study too
        callbacks.append(optuna.study.MaxTrialsCallback(job.target, FINISHED))
    if not _stop_wanted():  # a signal may come while the data loads
        with contextlib.suppress(Stopped):  # Optuna has recorded the trial as failed
            study.optimize(objective, n_trials=trials, timeout=job.timeout, callbacks=callbacks)
    return _stop_wanted()


def _worker(job: _Job, index: int, trials: int | None, parent: int) -> None:
    """One worker process: its own storage connection, its share of the trials."""
    quiet_optuna()
    with stop_on_signals():  # a terminal's Ctrl-C reaches every process of the group
        _die_with_parent(parent)
        try:
            stopped = _search(job, index, trials)
        except DigitlabError as exc:  # one line, as the parent would print it
            print(f"Error: tuning worker {index}: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    if stopped:
        raise SystemExit(130)


def _how_it_ended(process: multiprocessing.process.BaseProcess) -> str:
    code = process.exitcode or 0
    if code >= 0:
        return f"stopped with exit code {code}"
    try:
        return f"was killed by signal {-code} ({signal.Signals(-code).name})"
    except ValueError:
        return f"was killed by signal {-code}"


def _death(index: int, process: multiprocessing.process.BaseProcess, failed: list[int]) -> str:
    """What happened to a worker that ended badly, and to its trials, in words."""
    how = _how_it_ended(process)
    if (process.exitcode or 0) > 0:  # a Python error: multiprocessing printed it
        how += " (its error is printed above)"
    trials = (
        f"its trial {failed[0]} was marked failed" if len(failed) == 1
        else f"its trials {', '.join(map(str, failed))} were marked failed" if failed
        else "it left no trial running"
    )  # fmt: skip
    return f"worker {index} (pid {process.pid}) {how}; {trials}"


def _run_workers(job: _Job, workers: int, remaining: int | None, study: optuna.Study) -> bool:
    """Start `workers` processes sharing the study and wait for them; True if interrupted.

    A worker that dies with trials RUNNING has them failed at once (`fail_dead_trials`).

    Raises:
        DigitlabError: a worker died or failed, not asked to stop; after the others ended.
    """
    context = multiprocessing.get_context("spawn")  # fresh interpreters: JAX dislikes fork
    shares: list[int | None] = [None] * workers
    if remaining is not None:
        shares = [remaining // workers + (i < remaining % workers) for i in range(workers)]
    processes = [
        (i, context.Process(target=_worker, args=(job, i, share, os.getpid()),
                            name=f"digitlab-tune-{i}"))
        for i, share in enumerate(shares)
        if share != 0
    ]  # fmt: skip
    for _, process in processes:
        process.start()
    host, deaths, relayed = socket.gethostname(), {}, False

    def bury() -> None:  # the trials of workers that ended: none may stay RUNNING
        for i, process in processes:
            if process.exitcode is not None and i not in deaths:
                reason = f"its worker (pid {process.pid}) {_how_it_ended(process)}"
                failed = fail_dead_trials(study, f"{host}:{process.pid}", reason)
                deaths[i] = _death(i, process, failed)

    try:
        while alive := [p for _, p in processes if p.is_alive()]:
            bury()
            if requested.is_set() and not relayed:  # Ctrl-C or SIGTERM here: pass it on
                for process in alive:
                    process.terminate()  # SIGTERM: the worker stops between batches
                relayed = True
            multiprocessing.connection.wait([p.sentinel for p in alive], timeout=0.2)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now
        for _, process in processes:
            process.kill()
            process.join()
    bury()
    interrupted = requested.is_set()
    failed = [deaths[i] for i, p in processes if p.exitcode not in (0, 130)]
    if failed and not interrupted:
        raise DigitlabError(
            f"{len(failed)} of {len(processes)} tuning workers ended early: "
            + "; ".join(failed)
            + "; run the same command again to finish the study"
        )
    return interrupted or any(p.exitcode != 0 for _, p in processes)


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
            f"({counts or 'none'}), {self.new_trials} new in {format_duration(self.seconds)}"
        ]
        if self.best is not None:
            lines.append(
                f"best: trial {self.best.number}, validation accuracy {self.best.value:.2%}: "
                f"{describe(self.best.params)}"
            )
        if self.run is not None:
            accuracy = self.run.metrics.test_accuracy
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
    dataset: str = DEFAULT_DATASET,
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
        SpecError: bad space, options, a study started with other settings, or a storage
            file that is not an Optuna journal.
        DigitlabError: the storage cannot be opened, or a worker died or failed; the
            message says how (e.g. killed by signal 9) and which of its trials, left
            running, were marked failed. Trials that killed processes of this host left
            running are marked failed when a study is opened.
    """
    from digitlab.data import class_names, fetch_dataset

    space = space if space is not None else SearchSpace()  # validated when it was made
    if trials is not None and trials < 1:
        raise SpecError(f"trials must be at least 1, got {trials}")
    if timeout is not None and not timeout > 0:
        raise SpecError(f"timeout must be positive, got {timeout}")
    if workers < 1:
        raise SpecError(f"workers must be at least 1, got {workers}")
    if pruner not in PRUNERS:
        raise SpecError(unknown("pruner", pruner, PRUNERS))
    if not 0 < validation_split < 1:
        raise SpecError(f"tuning needs a validation split in (0, 1), got {validation_split}")
    train = validate(
        TrainConfig,
        {"dataset": dataset, "train_samples": train_samples,
         "validation_split": validation_split, "seed": seed, "epochs": space.epochs},
        "tuning options",
    )  # fmt: skip
    class_names(dataset)  # an unknown dataset is refused before the study is touched
    quiet_optuna()
    label = storage_label(storage, runs_dir)
    the_study = _open_study(study, open_storage(storage, runs_dir), space, train, pruner)
    fail_orphaned_trials(the_study)  # trials of killed processes: failed, not left RUNNING
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
                   _str(data_dir), workers)  # fmt: skip
        with _live(the_study, console), stop_on_signals():
            if workers == 1:
                try:
                    interrupted = _search(job, 0, remaining)
                except KeyboardInterrupt:  # a second Ctrl-C, while the first was handled
                    interrupted = True
            else:
                interrupted = _run_workers(job, workers, remaining, the_study)
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
    spec = spec.replace(
        description=f"best of study '{study.study_name}': trial {best.number}, validation "
        f"accuracy {best.value:.4f}; {spec.description}",
    )
    run = train_run(spec, runs_dir=runs_dir, data_dir=data_dir, verbose=0)
    if run.status == "complete":  # not cut short by Ctrl-C: the next call may reuse it
        study.set_user_attr(BEST_RUN_ATTR, {"trial": best.number, "path": str(run.path.resolve())})
    return run
