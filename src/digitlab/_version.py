"""The package version, in one place: `digitlab.__version__`, the runs and the reports read
it from here (a module that imports nothing, so any layer may)."""

__version__ = "0.1.0"
