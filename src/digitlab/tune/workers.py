"""Searching: a study's trials run in this process, or in worker processes that share it.

A worker that dies mid-trial (killed, out of memory) leaves no trial RUNNING: its parent
fails the trials it was running and says so. Workers die with their parent: on Linux the
kernel sends them SIGTERM when it dies, and everywhere they check between batches and trials
that their parent is still the one that started them.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial

from digitlab.errors import DigitlabError
from digitlab.interrupts import requested, stop_on_signals
from digitlab.schema import TrainConfig
from digitlab.search_space import SearchSpace
from digitlab.tune.objective import Objective, Stopped, follow_parent, stop_wanted
from digitlab.tune.storages import FINISHED, fail_dead_trials, open_storage, quiet_optuna
from digitlab.tune.study import open_study


def _stop_between_trials(study: optuna.Study, trial: FrozenTrial) -> None:
    if stop_wanted():
        study.stop()


@dataclass(frozen=True)
class Job:
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


def search(job: Job, index: int, trials: int | None) -> bool:
    """Run up to `trials` trials of the study (None: until the target or the timeout).

    Returns True if a signal stopped it.
    """
    storage = open_storage(job.storage, job.runs_dir)
    study = open_study(job.study, storage, job.space, job.train, job.pruner, index)
    objective = Objective(job.space, job.train, job.data_dir, index, job.workers)
    callbacks = [_stop_between_trials]
    if job.target is not None:  # other machines may be filling the study too
        callbacks.append(optuna.study.MaxTrialsCallback(job.target, FINISHED))
    if not stop_wanted():  # a signal may come while the data loads
        with contextlib.suppress(Stopped):  # Optuna has recorded the trial as failed
            study.optimize(objective, n_trials=trials, timeout=job.timeout, callbacks=callbacks)
    return stop_wanted()


def _worker(job: Job, index: int, trials: int | None, parent: int) -> None:
    """One worker process: its own storage connection, its share of the trials."""
    quiet_optuna()
    with stop_on_signals():  # a terminal's Ctrl-C reaches every process of the group
        follow_parent(parent)
        try:
            stopped = search(job, index, trials)
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


def run_workers(job: Job, workers: int, remaining: int | None, study: optuna.Study) -> bool:
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
