"""The study storages' former address: they live in `digitlab.tune.storages` now.

Kept so that `from digitlab.studies import open_storage` (tests, benchmarks, scripts) goes on
working.
"""

from digitlab.tune.storages import (
    CONNECT_TIMEOUT_S,
    DEFAULT_STUDY,
    FAILURE_ATTR,
    FINISHED,
    HEARTBEAT_GRACE_S,
    HEARTBEAT_INTERVAL_S,
    JOURNAL_FILE,
    WORKER_ATTR,
    fail_dead_trials,
    fail_orphaned_trials,
    journal_path,
    open_storage,
    process_alive,
    quiet_optuna,
    storage_label,
)

__all__ = [
    "CONNECT_TIMEOUT_S",
    "DEFAULT_STUDY",
    "FAILURE_ATTR",
    "FINISHED",
    "HEARTBEAT_GRACE_S",
    "HEARTBEAT_INTERVAL_S",
    "JOURNAL_FILE",
    "WORKER_ATTR",
    "fail_dead_trials",
    "fail_orphaned_trials",
    "journal_path",
    "open_storage",
    "process_alive",
    "quiet_optuna",
    "storage_label",
]
