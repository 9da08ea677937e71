"""A study: created or joined with the same settings, sampled and pruned, its best saved.

A study records the space and training setup it was made with; joining it with other ones
is refused. Its best trial becomes a run by training it again through
`digitlab.training.train` from its parameters and the seed, so nothing but numbers travels
through the storage.
"""

from __future__ import annotations

import socket
import warnings
import zlib
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from digitlab.errors import SpecError
from digitlab.runs import Run, load_run
from digitlab.schema import TrainConfig
from digitlab.search_space import SearchSpace, spec_for_trial
from digitlab.tune.storages import FINISHED

SETUP_ATTR = "digitlab.setup"  # study user attribute: the space and data a study was made with
BEST_RUN_ATTR = "digitlab.best_run"
METRIC = "validation accuracy"  # what a trial's value is: named in optuna-dashboard's axes


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


def open_study(
    name: str, storage, space: SearchSpace, train: TrainConfig, pruner: str, worker: int = 0
) -> optuna.Study:
    """Create the study, or load it and check it was made with the same space and data.

    The study's one metric is named `METRIC`, so optuna-dashboard labels its axes with it.
    """
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
    if study.metric_names != [METRIC]:  # else the dashboard calls it "Objective 0"
        with warnings.catch_warnings():  # experimental in Optuna 3.2 to 5 at least
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC])  # also names a study made before this
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    study.sampler = _sampler(train.seed, worker, finished)
    return study


def save_best_run(
    study: optuna.Study, best: FrozenTrial, space: SearchSpace, train: TrainConfig,
    runs_dir: str | Path | None, data_dir: str | Path | None,
) -> Run:  # fmt: skip
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
