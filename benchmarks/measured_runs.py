"""The runs a benchmark measures: run folders given on its command line, and runs it trains
first from `--train PRESET` or `--train PRESET:EPOCHS` (bench_ood, bench_shift, bench_verdict)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable


def measured_runs(paths: Iterable[str], presets: Iterable[str], prefix: str) -> list:
    """Each folder in `paths` loaded, then each of `presets` trained (pictures off) into a new
    temporary runs folder named `prefix`…; in that order."""
    from digitlab.runs import load_run

    runs = [load_run(path) for path in paths]
    presets = list(presets)
    if presets:
        from digitlab.config import with_overrides
        from digitlab.presets import get_preset
        from digitlab.training import train

        folder = tempfile.mkdtemp(prefix=prefix)
        for item in presets:
            name, _, epochs = item.partition(":")
            spec = get_preset(name)
            spec = with_overrides(spec, epochs=int(epochs)) if epochs else spec
            runs.append(train(spec, runs_dir=folder, verbose=2, pictures=False))
    return runs
