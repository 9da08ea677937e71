"""One entry for an experiment, wherever it trains: in this process (`runner`), or on
worker processes sharing an Optuna study (`distributed`), here or on many machines.

`digitlab experiment` and `digitlab.experiment(...)` both call `run`, so the Python API takes
`workers` and `storage` as the command's `--workers` and `--storage` do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from digitlab.experiments.schema import Definition


def run(
    definition: Definition,
    *,
    workers: int | None = None,
    storage: str | None = None,
    resume: str | Path | None = None,
    runs_dir: str | Path | None = None,
    **options: Any,
):
    """Run, join or resume `definition`: in this process by default; with `workers` ≥ 2 or a
    `storage`, or to resume an experiment that ran so, on worker processes sharing a study
    (`distributed.run_shared`). The other options are `runner.run_experiment`'s.

    Returns:
        The `Outcome` (`.folder`, `.record`).

    Raises:
        SpecError: `workers` below 1, or what the runner refuses.
    """
    from digitlab.errors import SpecError

    if workers is not None and workers < 1:
        raise SpecError(f"workers (--workers) must be at least 1, got {workers}")
    shared = (workers or 1) > 1 or storage is not None
    if not shared and resume is not None:
        from digitlab.experiments.distributed import ran_on_workers

        shared = ran_on_workers(resume, definition.name, runs_dir)
    if not shared:
        from digitlab.experiments.runner import run_experiment

        return run_experiment(definition, resume=resume, runs_dir=runs_dir, **options)
    from digitlab.experiments.distributed import run_shared

    return run_shared(
        definition,
        workers=workers or 1,
        storage=storage,
        resume=resume,
        runs_dir=runs_dir,
        **options,
    )
