"""The run directory: the one artifact that evaluate, predict, serve and tune read.

A run is self-describing: `config.json` holds the resolved spec, the preprocessing, the
dataset with its hashes, the seed and the library versions, so nothing downstream needs the
flags that trained it. Its files are read here and only here, through the schema's models
(`RunConfig`, `Metrics`), so a run folder someone else made, edited or broke becomes one
clear `RunError` naming the file and the field, never a traceback:

- JSON files are read only if they are regular files of at most 10 MB, `model.keras` only if
  it is a regular file of at most 2 GB (a symlink to `/dev/zero`, a FIFO or a folder is
  refused), and the model is loaded in Keras's safe mode.
- A run directory is built under a hidden staging name and renamed when complete, so a
  killed process never leaves half a run where `digitlab runs` looks; a new run's folder
  is claimed with one `mkdir` first, so two writers never share (or replace) one. Replacing
  a run (a resume) keeps the old one under a hidden `.replaced-` name until the new one is
  in place; the next write in that folder finishes or undoes a swap that a kill interrupted.
"""

from digitlab.runs.folder import (
    CONFIG_FILE,
    EVENTS_DIR,
    HISTORY_FILE,
    INSPECT_DIR,
    INSPECT_FILE,
    METRICS_FILE,
    MODEL_FILE,
    REPORT_FILE,
    STATS_FILE,
    has_config,
    read_history,
    write_history,
    write_inspect_summary,
    write_run_files,
)
from digitlab.runs.run import (
    EXPERIMENT_RUNS_FOLDER,
    EXPERIMENTS_FOLDER,
    Run,
    UnreadableRun,
    default_runs_dir,
    experiment_folders,
    find_run,
    list_runs,
    load_run,
    read_run,
    run_ref,
    runs_command,
    scan_runs,
)
from digitlab.runs.staging import (
    CRASH_ENV,
    REPLACED_PREFIX,
    STAGING_PREFIX,
    TARGET_FILE,
    check_writable,
    claim_run_path,
    recover,
    run_name,
    staged_run,
)
from digitlab.runs.table import RunsListing, listing, next_steps

__all__ = [
    "CONFIG_FILE",
    "CRASH_ENV",
    "EVENTS_DIR",
    "EXPERIMENTS_FOLDER",
    "EXPERIMENT_RUNS_FOLDER",
    "HISTORY_FILE",
    "INSPECT_DIR",
    "INSPECT_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "REPLACED_PREFIX",
    "REPORT_FILE",
    "STAGING_PREFIX",
    "STATS_FILE",
    "TARGET_FILE",
    "Run",
    "RunsListing",
    "UnreadableRun",
    "check_writable",
    "claim_run_path",
    "default_runs_dir",
    "experiment_folders",
    "find_run",
    "has_config",
    "list_runs",
    "listing",
    "load_run",
    "next_steps",
    "read_history",
    "read_run",
    "recover",
    "run_name",
    "run_ref",
    "runs_command",
    "scan_runs",
    "staged_run",
    "write_history",
    "write_inspect_summary",
    "write_run_files",
]
