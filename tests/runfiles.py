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


def model_run(path: Path) -> Path:
    """A run folder that opens: an untrained seed model (built in a second), config.json,
    metrics.json with a 10 × 10 confusion matrix, and a one-epoch history.csv."""
    from digitlab.model import build_model, compile_model
    from digitlab.runs import write_history

    path.mkdir(parents=True)
    spec = get_preset("seed")
    model = build_model(spec)
    compile_model(model, spec)
    model.save(path / "model.keras")
    (path / "config.json").write_text(json.dumps(config()))
    matrix = [[10 * (i == j) for j in range(10)] for i in range(10)]
    metrics = {"test_accuracy": 0.5, "test_loss": 1.0, "train_seconds": 1.0, "epochs": 1}
    metrics["confusion_matrix"] = matrix
    (path / "metrics.json").write_text(json.dumps(metrics))
    write_history(path / "history.csv", {"loss": [0.5], "accuracy": [0.8]})
    return path
