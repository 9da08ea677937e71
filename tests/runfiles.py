"""Run folders written by hand, as another program or an older digitlab might leave them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from digitlab.presets import get_preset


def config(created: str = "2026-01-01T00:00:00", **changes: Any) -> dict[str, Any]:
    """A valid config.json for the seed preset on MNIST, with top-level `changes`."""
    spec = get_preset("seed")
    data = {
        "name": "seed",
        "created": created,
        "status": "complete",
        "epochs_done": 1,
        "spec": spec.to_dict(),
        "preprocessing": {"input": "flat", "shape": [784], "scale": 1 / 255},
        "dataset": {"name": "mnist", "class_names": [str(d) for d in range(10)]},
        "seed": 0,
    }
    data.update(changes)
    return data


def fake_run(path: Path, created: str = "2026-01-01T00:00:00", accuracy: float = 0.9) -> Path:
    """A run folder with a valid config.json and metrics.json, but no model."""
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps({"test_accuracy": accuracy}))
    (path / "config.json").write_text(json.dumps(config(created)))
    return path
