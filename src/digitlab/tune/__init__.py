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

A study lives in a storage that several processes and machines share (`storages`: a journal
file in the runs folder by default, or a PostgreSQL URL). Re-running the same command resumes
the study: `trials` is the study's target, not an increment, so an interrupted search tops up
to it and machines sharing a study stop together.

A worker that dies mid-trial (killed, out of memory) leaves no trial RUNNING: its parent
fails the trials it was running and says so; a later call fails the trials of vanished
processes of this host, and a database's heartbeat those of any machine. Workers die with
their parent: on Linux the kernel sends them SIGTERM when it dies, and everywhere they check
between batches and trials that their parent is still the one that started them.

The package, one concern a module:

- `search`: `tune` itself, its options checked, and the `TuneResult` it returns;
- `study`: a study created or joined with the same settings, its sampler, pruner and best run;
- `objective`: one trial trained in memory, and how a trial stops;
- `workers`: the trials run here or in worker processes, and what a dead worker left;
- `storages`: the journal file or database a study lives in;
- `report`: the live table of trials and `tune report`'s plots and top trials.

The search space is `digitlab.search_space`; `tune dashboard` is `digitlab.board`.
"""

import warnings

# Optuna imports tqdm.auto for a progress bar digitlab never shows (`tune` draws its own table
# of trials), and in a Jupyter kernel without ipywidgets that import warns "IProgress not
# found": a warning about nothing a learner sees. Importing any module of this package runs
# this first, so Optuna is imported here, quietly, before `tune` or `tune report` use it.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="IProgress not found")
    from digitlab.tune.objective import TEST_KILL_ENV, Stopped
    from digitlab.tune.search import TuneResult, parse_duration, tune
    from digitlab.tune.storages import DEFAULT_STUDY, FAILURE_ATTR, FINISHED, WORKER_ATTR
    from digitlab.tune.study import BEST_RUN_ATTR, SETUP_ATTR

__all__ = [
    "BEST_RUN_ATTR",
    "DEFAULT_STUDY",
    "FAILURE_ATTR",
    "FINISHED",
    "SETUP_ATTR",
    "TEST_KILL_ENV",
    "WORKER_ATTR",
    "Stopped",
    "TuneResult",
    "parse_duration",
    "tune",
]
