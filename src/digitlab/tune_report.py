"""`tune report`'s former address: it lives in `digitlab.tune.report` now.

Kept so that `from digitlab.tune_report import report` goes on working.
"""

from digitlab.tune.report import (
    REPORT_PLOTS,
    TOP_TRIALS_CSV,
    TOP_TRIALS_MD,
    TrialsView,
    format_duration,
    report,
)

__all__ = [
    "REPORT_PLOTS",
    "TOP_TRIALS_CSV",
    "TOP_TRIALS_MD",
    "TrialsView",
    "format_duration",
    "report",
]
