"""One trial: an Optuna objective that trains a network in memory, and how a trial stops.

A trial stops at its next batch on Ctrl-C or SIGTERM, or (in a worker process) once the
`tune` that started the worker is gone; `follow_parent` arms that in a worker.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

from digitlab.interrupts import die_with_parent, requested
from digitlab.schema import TrainConfig
from digitlab.search_space import SearchSpace, spec_for_trial
from digitlab.tune.storages import WORKER_ATTR

# Tests only: "worker<i>" makes worker i SIGKILL itself as its first trial starts; "parent"
# makes worker 0 SIGKILL the parent once every worker is inside a trial.
TEST_KILL_ENV = "DIGITLAB_TUNE_TEST_KILL"
_parent_pid: int | None = None  # in a worker process: the pid of the `tune` that started it


class Objective:
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
            if stop_wanted():
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


class Stopped(Exception):
    """A trial cut short by Ctrl-C or SIGTERM; Optuna records it as failed."""


def stop_wanted() -> bool:
    """Ctrl-C or SIGTERM came, or (in a worker) the parent that started it is gone."""
    return requested.is_set() or (_parent_pid is not None and os.getppid() != _parent_pid)


def follow_parent(parent: int) -> None:
    """Make this worker stop when its parent dies, rather than fill the study on its own.

    On Linux the kernel sends SIGTERM at the parent's death (prctl PR_SET_PDEATHSIG), which
    stops the running trial at its next batch; everywhere, `stop_wanted` sees that the
    parent pid changed, between batches and trials.
    """
    global _parent_pid
    _parent_pid = parent
    arm = die_with_parent(parent, signal.SIGTERM, orphaned=requested.set)
    if arm is not None:
        arm()
    elif os.getppid() != parent:  # it died already
        requested.set()
