"""`tune`: search networks for the highest validation accuracy and save the best as a run.

A study searches a space of MLPs (hidden layers, units, activation, dropout, optimizer,
learning rate and its schedule, batch size) with Optuna's TPE sampler. Each trial trains in
memory on the training set less a validation split, reports the validation accuracy after
every epoch and is pruned when it falls behind earlier trials. The test set is never looked
at to choose. At the end the best trial is trained once more through
`digitlab.training.train`, with the same seed, which writes a normal run directory.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.live import Live

from digitlab.choices import canonical
from digitlab.data import DEFAULT_DATASET
from digitlab.errors import DigitlabError, SpecError
from digitlab.interrupts import stop_on_signals
from digitlab.runs import Run
from digitlab.schema import PRUNERS, TrainConfig, unknown, validate
from digitlab.search_space import SearchSpace, describe, preset_point
from digitlab.tune.report import TrialsView, best_trial, format_duration, importance_warning
from digitlab.tune.storages import (
    DEFAULT_STUDY,
    FINISHED,
    fail_orphaned_trials,
    open_storage,
    quiet_optuna,
    storage_label,
)
from digitlab.tune.study import open_study, save_best_run
from digitlab.tune.workers import Job, run_workers, search


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

    @classmethod
    def of(
        cls, study: optuna.Study, storage: str, trials: list[FrozenTrial], best: FrozenTrial | None,
        run: Run | None, interrupted: bool, seconds: float, finished_before: int,
    ) -> TuneResult:  # fmt: skip
        """The result of a search of `study` that found `finished_before` trials finished."""
        return cls(
            study=study.study_name,
            storage=storage,
            trials=trials,
            best=best,
            run=run,
            interrupted=interrupted,
            seconds=seconds,
            new_trials=len([t for t in trials if t.state in FINISHED]) - finished_before,
            counts={s.name: sum(t.state == s for t in trials) for s in TrialState},
        )

    def summary(self) -> list[str]:
        """Lines for a person: counts, the best trial and its run, a warning when too few
        trials are complete to rank parameter importances by, how to go on."""
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
        warning = importance_warning(self.counts.get("COMPLETE", 0))
        if warning is not None:  # the dashboard and `tune report` rank them all the same
            lines.append(warning)
        if self.interrupted:
            lines.append("interrupted: run the same command again to continue the study")
        return lines


def tune(
    study: str = DEFAULT_STUDY, *, space: SearchSpace | None = None, trials: int | None = 50,
    timeout: float | None = None, workers: int = 1, storage: str | Path | None = None,
    dataset: str = DEFAULT_DATASET, train_samples: int | None = None,
    validation_split: float = 0.1, seed: int = 0, pruner: str = "median",
    warm_start: bool = True, save_best: bool = True, runs_dir: str | Path | None = None,
    data_dir: str | Path | None = None, console: Console | None = None,
) -> TuneResult:  # fmt: skip
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
        DigitlabError: the storage cannot be opened, or a worker died or failed; the message
            says how (e.g. killed by signal 9) and which of its running trials were failed.
    """
    job = _job(study, space=space, trials=trials, timeout=timeout, workers=workers,
               storage=storage, runs_dir=runs_dir, data_dir=data_dir, pruner=pruner,
               dataset=dataset, train_samples=train_samples, validation_split=validation_split,
               seed=seed)  # fmt: skip
    label, the_study = storage_label(storage, runs_dir), _open(job, warm_start)
    before = len(the_study.get_trials(deepcopy=False, states=FINISHED))
    start = time.perf_counter()
    interrupted = _search_the_rest(job, the_study, before, console)
    seconds, trials_now = time.perf_counter() - start, the_study.get_trials()
    best, run = best_trial(trials_now), None
    if best is not None and save_best and not interrupted:
        run = save_best_run(the_study, best, job.space, job.train, runs_dir, data_dir)
        interrupted = run.status != "complete"
    return TuneResult.of(the_study, label, trials_now, best, run, interrupted, seconds, before)


def _job(
    study: str, *, space: SearchSpace | None, trials: int | None, timeout: float | None,
    workers: int, storage: str | Path | None, runs_dir: str | Path | None,
    data_dir: str | Path | None, pruner: str, dataset: str, train_samples: int | None,
    validation_split: float, seed: int,
) -> Job:  # fmt: skip
    """`tune`'s options checked, as the job its workers share.

    Raises:
        SpecError: an option out of range, or an unknown pruner or dataset; before the
            study is touched.
    """
    from digitlab.data import class_names

    space = space if space is not None else SearchSpace()  # validated when it was made
    if trials is not None and trials < 1:
        raise SpecError(f"trials must be at least 1, got {trials}")
    if timeout is not None and not timeout > 0:
        raise SpecError(f"timeout must be positive, got {timeout}")
    if workers < 1:
        raise SpecError(f"workers must be at least 1, got {workers}")
    pruner = canonical(pruner, PRUNERS)  # "Median" is median
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
    class_names(train.dataset)  # an unknown dataset is refused before the study is touched
    return Job(study, _str(storage), _str(runs_dir), space, train, pruner, trials, timeout,
               _str(data_dir), workers)  # fmt: skip


def _open(job: Job, warm_start: bool) -> optuna.Study:
    """The study, ready to search: orphaned trials failed, the data fetched, the warm start
    enqueued in a new study."""
    from digitlab.data import fetch_dataset

    quiet_optuna()
    storage = open_storage(job.storage, job.runs_dir)
    study = open_study(job.study, storage, job.space, job.train, job.pruner)
    fail_orphaned_trials(study)  # trials of killed processes: failed, not left RUNNING
    fetch_dataset(job.train.dataset, data_dir=job.data_dir)  # here, not racing in each worker
    start_point = preset_point(job.space) if warm_start else None
    if start_point is not None and not study.get_trials(deepcopy=False):
        # skip_if_exists: another machine starting the same study at once enqueues it too
        study.enqueue_trial(start_point, skip_if_exists=True)
    return study


def _search_the_rest(job: Job, study: optuna.Study, before: int, console: Console | None) -> bool:
    """The trials the study lacks of its target (`before` are finished), searched here or by
    worker processes under a live table; True if Ctrl-C or SIGTERM stopped them."""
    remaining = None if job.target is None else max(job.target - before, 0)
    if remaining == 0:
        return False
    with _live(study, console), stop_on_signals():
        if job.workers > 1:
            return run_workers(job, job.workers, remaining, study)
        try:
            return search(job, 0, remaining)
        except KeyboardInterrupt:  # a second Ctrl-C, while the first was handled
            return True


def _str(path: str | Path | None) -> str | None:
    return None if path is None else str(path)
