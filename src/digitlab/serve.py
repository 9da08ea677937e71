"""Moved to `digitlab.api`; this name stays only until the CLI imports from there."""

from digitlab.api import check_port, run_server

__all__ = ["check_port", "run_server"]
