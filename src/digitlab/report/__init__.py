"""Reports a person opens in a browser: a run's or an experiment's `report.html`, and
`compare` for several runs.

Every page is one self-contained HTML file rendered from the Jinja2 templates in
`report/templates/` (autoescaped): pictures are inlined as PNG data URIs, the CSS is inline,
and a Content-Security-Policy forbids loading anything else, so a page works offline, from
a USB stick or an e-mail attachment, and reads on a phone. Files are written atomically.
"""

from digitlab.report.compare import COMPARE_HTML, COMPARE_PNG, Comparison, compare, default_out_dir
from digitlab.report.pages import (
    EXPERIMENT_FILE,
    REPORT_FILE,
    read_experiment,
    write_experiment_report,
    write_report,
    write_run_report,
)

__all__ = [
    "COMPARE_HTML",
    "COMPARE_PNG",
    "EXPERIMENT_FILE",
    "REPORT_FILE",
    "Comparison",
    "compare",
    "default_out_dir",
    "read_experiment",
    "write_experiment_report",
    "write_report",
    "write_run_report",
]
