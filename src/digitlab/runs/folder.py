"""The files of a run folder: their names, and the one reader and writer of each.

Nothing outside `digitlab.runs` opens these files; training hands its results to
`write_run_files`, calibration to `Run.store_calibration`, `digitlab inspect` to
`write_inspect_summary`, and everyone reads through a `Run`. Every write is atomic (a
temporary name, then a rename), and every read is capped and validated, so a damaged or
crafted file becomes one `RunError` line naming it.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.errors import RunError
from digitlab.files import (
    MAX_JSON_BYTES,
    MAX_MODEL_BYTES,
    atomic_path,
    check_regular,
    read_capped,
    what_is,
    write_json,
    write_text,
)
from digitlab.schema import Metrics, RunConfig, validate

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"  # written last: a folder with it is a complete run
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
STATS_FILE = "confidence.npz"  # the verifier `confidence.verdicts` measures with
INSPECT_DIR = "inspect"  # `digitlab inspect`'s pictures and summary, inside the run
INSPECT_FILE = "inspect.json"
EVENTS_DIR = "tensorboard"  # the TensorBoard event files `digitlab.events` writes during training
REPORT_FILE = "report.html"  # the run's offline page, `digitlab.report` draws it
ROBUSTNESS_FILE = "robustness.json"  # `digitlab robustness`'s figures under MNIST-C
MECHANISMS_FILE = "mechanisms.json"  # what `mechanisms.recorder` recorded during training


def exists(path: Path) -> bool:
    """Whether anything is at `path` (a dangling symlink counts: reading it says what's wrong)."""
    try:
        return path.is_symlink() or path.exists()
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


def has_config(folder: Path) -> bool:
    """Whether `folder` holds a run's config (it may still be unreadable)."""
    return exists(Path(folder) / CONFIG_FILE)


# ------------------------------------------------------------------------------------ reading
def read_json(path: Path, model):
    data = read_capped(path, MAX_JSON_BYTES, RunError)
    return validate(model, data, str(path), RunError, json=True)


def read_config(folder: Path) -> RunConfig:
    """The folder's config.json, validated.

    Raises:
        RunError: it is missing, too big, not JSON, or a field is wrong (named).
    """
    path = Path(folder) / CONFIG_FILE
    if not exists(path):
        raise RunError(f"{folder} is not a digitlab run (no {CONFIG_FILE}); see `digitlab runs`")
    return read_json(path, RunConfig)


def read_metrics(folder: Path, classes: int | None = None) -> Metrics:
    """The folder's metrics.json, validated; empty `Metrics` if there is none yet.

    Args:
        classes: the run's number of classes; its confusion matrix must be that square.

    Raises:
        RunError: it is unreadable, a field is wrong, or the matrix is not classes × classes.
    """
    path = Path(folder) / METRICS_FILE
    metrics = read_json(path, Metrics) if exists(path) else Metrics()
    matrix = metrics.confusion_matrix
    if classes is not None and matrix is not None and len(matrix) != classes:
        raise RunError(
            f"{path}: 'confusion_matrix' must be {classes} × {classes}, classes × classes; "
            f"it is {len(matrix)} × {len(matrix)}"
        )
    return metrics


def read_history(path: Path) -> dict[str, list[float]]:
    """Read a history.csv back into Keras's `History.history` shape.

    Raises:
        RunError: the file is not a regular file under 10 MB, or a value is not a number.
    """
    text = read_capped(path, MAX_JSON_BYTES, RunError).decode("utf-8", errors="replace")
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
        keys = [key for key in (rows[0] if rows else {}) if key and key != "epoch"]
        return {key: [float(row[key]) for row in rows] for key in keys}
    except (csv.Error, TypeError, ValueError):
        raise RunError(
            f"{path}: not a history table (a header, then one row of numbers per epoch)"
        ) from None


def read_folder_history(folder: Path) -> dict[str, list[float]]:
    """The folder's history.csv; {} if there is none."""
    path = Path(folder) / HISTORY_FILE
    return read_history(path) if exists(path) else {}


_STATS_CACHE: dict[tuple[str, int], dict[str, np.ndarray]] = {}


# What confidence.npz may hold, with each array's number of dimensions: the verifiers'
# weights (`verifiers.train_verifier`'s, with one more, first, dimension when several are
# stacked: `verifiers.stacked`), the companion's Dense layers (`companion.train_companion`'s),
# or, in runs calibrated before issue 22, the class directions of the PCA check.
COMPANION_ARRAYS = tuple(f"companion_{kind}_{i}" for i in range(3) for kind in ("kernel", "bias"))
STATS_ARRAYS = {
    "verifier_kernel_0": 2,
    "verifier_bias_0": 1,
    "verifier_kernel_1": 2,
    "verifier_bias_1": 1,
    **{name: 2 if "kernel" in name else 1 for name in COMPANION_ARRAYS},
    "means": 2,
    "components": 3,
}


def _check_stats(stats: dict[str, np.ndarray]) -> None:
    """Raise ValueError unless the arrays are numbers of the shapes calibration writes."""
    stack = 0  # verifiers stacked on a first axis: 1, else 0
    if "verifier_kernel_0" in stats:
        stack = stats["verifier_kernel_0"].ndim - STATS_ARRAYS["verifier_kernel_0"]
    for name, array in stats.items():
        ndim = STATS_ARRAYS[name] + (stack if name.startswith("verifier_") else 0)
        if stack not in (0, 1) or array.ndim != ndim or array.dtype.kind != "f":
            raise ValueError(f"{name} is not a {ndim}-D array of numbers")
    if "verifier_kernel_0" in stats:
        k0, b0 = stats["verifier_kernel_0"], stats.get("verifier_bias_0")
        k1, b1 = stats.get("verifier_kernel_1"), stats.get("verifier_bias_1")
        if b0 is None or k1 is None or b1 is None:
            raise ValueError("the verifier's weights are incomplete")
        members = {array.shape[:stack] for array in (k0, b0, k1, b1)}  # one count for all
        fits = b0.shape[-1] == k1.shape[-2] == k0.shape[-1] and b1.shape[-1] == k1.shape[-1]
        if len(members) > 1 or not fits:
            raise ValueError("the verifier's weights don't fit together")
    companion = [stats.get(name) for name in COMPANION_ARRAYS]  # kernel, bias, kernel, …
    if any(array is not None for array in companion):
        if any(array is None for array in companion):
            raise ValueError("the companion's weights are incomplete")
        kernels, biases = companion[::2], companion[1::2]
        chained = all(a.shape[1] == b.shape[0] for a, b in itertools.pairwise(kernels))
        if not chained or any(b.shape != k.shape[1:] for k, b in zip(kernels, biases, strict=True)):
            raise ValueError("the companion's weights don't fit together")


def read_confidence_stats(folder: Path) -> dict[str, np.ndarray]:
    """The folder's confidence.npz (the verifiers' and companion's weights, or an older
    run's `means` and `components`), read once per file version.

    Raises:
        RunError: it is missing, not a regular file, or not the arrays calibration writes.
    """
    path = Path(folder) / STATS_FILE
    fix = f"run `digitlab calibrate {Path(folder).name}` to write it again"
    try:
        check_regular(path, MAX_MODEL_BYTES, RunError)
        key = (str(path), os.stat(path).st_mtime_ns)
        if key not in _STATS_CACHE:
            with np.load(path, allow_pickle=False) as data:
                stats = {name: data[name] for name in STATS_ARRAYS if name in data.files}
            _check_stats(stats)
            _STATS_CACHE[key] = stats
        return _STATS_CACHE[key]
    except RunError as exc:
        raise RunError(f"{exc}; {fix}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise RunError(f"{path} is unreadable ({exc}); {fix}") from None


def read_inspect_summary(folder: Path) -> dict[str, Any] | None:
    """`digitlab inspect`'s summary of the run in `folder`, or None if it has none.

    Raises:
        RunError: it is there but too big or not JSON.
    """
    path = Path(folder) / INSPECT_DIR / INSPECT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(read_capped(path, MAX_JSON_BYTES, RunError))
    except ValueError:
        raise RunError(f"{path} is not JSON; run `digitlab inspect` again") from None


def read_robustness(folder: Path) -> dict[str, Any] | None:
    """`digitlab robustness`'s results for the run in `folder` (`digitlab.robustness`
    describes them), or None if it has none.

    Raises:
        RunError: the file is there but too big, or not a JSON object.
    """
    return read_json_object(Path(folder) / ROBUSTNESS_FILE, "run `digitlab robustness` again")


def read_json_object(path: Path, remedy: str) -> dict[str, Any] | None:
    """The JSON object in `path`, or None if there is no file.

    Raises:
        RunError: the file is too big, or not a JSON object ("…; {remedy}").
    """
    if not exists(path):
        return None
    try:
        data = json.loads(read_capped(path, MAX_JSON_BYTES, RunError))
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise RunError(f"{path} is not a JSON object; {remedy}")
    return data


def read_mechanisms(folder: Path) -> dict[str, Any] | None:
    """What `mechanisms.recorder.MechanismRecorder` recorded while the run in `folder`
    trained (its docstring describes it), or None for a run trained without it.

    Raises:
        RunError: the file is there but too big, or not a JSON object.
    """
    return read_json_object(Path(folder) / MECHANISMS_FILE, "train the run again to record it")


def write_mechanisms(folder: str | Path, recording: dict[str, Any]) -> Path:
    """Write the recorder's values as the run's mechanisms.json, atomically."""
    return write_json(Path(folder) / MECHANISMS_FILE, recording)


# ------------------------------------------------------------------------------------ writing
def check_replaceable(folder: Path, *names: str, doing: str) -> None:
    """Before long work that ends by writing these files of the run: each must be a regular
    file or absent, so the work is not done for nothing.

    Raises:
        RunError: one is a folder, a FIFO, a device or a socket; named, with what to do.
    """
    for name in names:
        path = Path(folder) / name
        try:
            info = os.stat(path)
        except OSError:
            continue  # absent, or unreadable: the write says why
        if not stat.S_ISREG(info.st_mode):
            raise RunError(
                f"{what_is(path, info.st_mode)}, not a file, so {doing} can't store the "
                f"run's {name} there; move it out of the way and try again"
            )


def write_history(path: Path, history: dict[str, list[float]]) -> None:
    """Write Keras's `History.history` as CSV, one row per epoch (numbered from 1)."""
    keys = list(history)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for epoch, values in enumerate(zip(*(history[k] for k in keys), strict=True), start=1):
        writer.writerow([epoch, *(f"{v:.6g}" for v in values)])
    write_text(path, out.getvalue())


def write_config(folder: Path, config: RunConfig) -> Path:
    """Write the folder's config.json (indented JSON, as people read it)."""
    return write_text(Path(folder) / CONFIG_FILE, config.model_dump_json(indent=2) + "\n")


def write_confidence_stats(folder: Path, stats: dict[str, np.ndarray]) -> Path:
    """Save what the verdict measures with (the verifier's weights) as confidence.npz."""
    path = Path(folder) / STATS_FILE
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        np.savez(out, **stats)
    return path


def write_run_files(
    folder: str | Path,
    *,
    model: Any = None,
    history: dict[str, list[float]] | None = None,
    metrics: dict[str, Any] | None = None,
    stats: dict[str, np.ndarray] | None = None,
    mechanisms: dict[str, Any] | None = None,
    config: RunConfig | None = None,
) -> None:
    """Write the given files of a run into `folder`, each atomically, config.json last.

    Args:
        model: the trained Keras model → model.keras (with its optimizer state).
        history: Keras's `History.history` → history.csv.
        metrics: the test figures and timings → metrics.json.
        stats: what the confidence verdict measures with → confidence.npz (nothing is
            written for an empty dict: a run calibrated without a verifier).
        mechanisms: what `mechanisms.recorder` recorded while training → mechanisms.json.
        config: the run's `RunConfig` → config.json. It marks a complete run, so it is
            written after everything else passed in the same call.
    """
    folder = Path(folder)
    if model is not None:
        model.save(folder / MODEL_FILE)
    if history is not None:
        write_history(folder / HISTORY_FILE, history)
    if metrics is not None:
        write_json(folder / METRICS_FILE, metrics)
    if stats:
        write_confidence_stats(folder, stats)
    if mechanisms is not None:
        write_mechanisms(folder, mechanisms)
    if config is not None:
        write_config(folder, config)


def write_inspect_summary(out_dir: str | Path, summary: dict[str, Any]) -> Path:
    """Write `digitlab inspect`'s summary into `out_dir` (a run's is `RUN/inspect/`)."""
    return write_json(Path(out_dir) / INSPECT_FILE, summary)


def write_robustness(folder: str | Path, results: dict[str, Any]) -> Path:
    """Write `digitlab robustness`'s results as the run's robustness.json, atomically."""
    return write_json(Path(folder) / ROBUSTNESS_FILE, results)
