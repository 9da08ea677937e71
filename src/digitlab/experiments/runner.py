"""Run an experiment: every (variant, seed) trained as a normal run, then numbers, plots, words.

An experiment's folder is `RUNS_DIR/experiments/<timestamp>-<name>/`:

- `runs/`: one ordinary run per (variant, seed), trained by `training.train` like
  `digitlab train` does, so `evaluate`, `predict`, `serve` and `compare` take any of them;
- `experiment.json`: the definition, the budget, per-variant figures across seeds and the
  conclusion; rewritten (atomically) after every finished run, so a kill loses no finished
  work, and marked `interrupted` until every run is done;
- the plots, and `report.html` when the report writer is installed.

All runs train in this one process: imports and the JAX compilation are paid once (and the
compiled programs are cached across variants that share shapes). Runs go seed by seed, so an
interrupted experiment holds comparable variants. `resume` trains only what is missing.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from digitlab import interrupts
from digitlab.errors import RunError, SpecError
from digitlab.experiments import conclusions
from digitlab.experiments.schema import Budget, Definition, ExperimentRecord, Variant
from digitlab.files import MAX_JSON_BYTES, read_capped, write_text
from digitlab.runs import Run, check_writable, default_runs_dir, new_run_path, scan_runs
from digitlab.schema import OPTIMIZERS, Spec, validate

RECORD_FILE = "experiment.json"
RUNS_FOLDER = "runs"
EXPERIMENTS_FOLDER = "experiments"
ACTIVATION_BATCH = 500  # the fixed validation digits the activation statistics are taken on


@dataclass
class Outcome:
    """What `run_experiment` did: the folder, its record and whether it was interrupted."""

    folder: Path
    record: ExperimentRecord
    trained: list[str] = field(default_factory=list)  # run names trained by this call

    @property
    def interrupted(self) -> bool:
        return self.record.status == "interrupted"


# ------------------------------------------------------------------------------------ specs
def _default_rate(optimizer: str) -> float:
    import inspect

    import keras

    cls = getattr(keras.optimizers, OPTIMIZERS[optimizer])
    return float(inspect.signature(cls).parameters["learning_rate"].default)


def variant_spec(
    definition: Definition,
    variant: Variant,
    budget: Budget,
    seed: int,
    policy: str,
    standardize: tuple[float, float] = (0.0, 1.0),
) -> Spec:
    """The spec of one (variant, seed): its preset, layers, training overrides, the budget.

    Input scaling is a `Rescaling` layer in front of the network (it sees the pixels /255,
    like every run): ×255 for raw pixels, `(x − mean) / std` for standardised ones, so the
    saved run predicts from ordinary images like any other.
    """
    from digitlab.presets import get_preset

    spec = get_preset(variant.preset)
    layers = list(variant.layers if variant.layers is not None else spec.layers)
    if variant.input_scaling == "raw":
        layers.insert(0, {"type": "Rescaling", "scale": 255.0})
    elif variant.input_scaling == "standardize":
        mean, std = standardize
        layers.insert(0, {"type": "Rescaling", "scale": 1 / std, "offset": -mean / std})
    train = {**variant.train}
    batch = budget.fit_samples if variant.full_batch else train.get("batch_size", 32)
    train["batch_size"] = batch
    if policy == "linear" and batch != definition.reference_batch:
        optimizer = train.get("optimizer", spec.train.optimizer)
        rate = train.get("learning_rate", spec.train.learning_rate) or _default_rate(optimizer)
        train["learning_rate"] = rate * batch / definition.reference_batch
    train.update(
        epochs=budget.epochs,
        train_samples=budget.train_samples,
        validation_split=budget.validation_split,
        seed=seed,
    )
    description = variant.description or spec.description
    return spec.replace(
        name=variant.name, layers=layers, train=train, description=description[:2000]
    )


# ---------------------------------------------------------------------------------- folders
def experiments_dir(runs_dir: str | Path | None = None) -> Path:
    return Path(runs_dir if runs_dir is not None else default_runs_dir()) / EXPERIMENTS_FOLDER


def read_record(folder: str | Path) -> ExperimentRecord:
    """A folder's `experiment.json`.

    Raises:
        RunError: missing, unreadable or not an experiment record.
    """
    import json

    path = Path(folder) / RECORD_FILE
    data = read_capped(path, MAX_JSON_BYTES, RunError)
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise RunError(f"{path} is not valid JSON: {exc}") from None
    return validate(ExperimentRecord, parsed, str(path), error=RunError)


def find_experiment(ref: str | Path, name: str | None, runs_dir: str | Path | None) -> Path:
    """An experiment folder: a path, a folder name in RUNS_DIR/experiments, or "latest"
    (the newest folder of experiment `name`).

    Raises:
        RunError: nothing matches.
    """
    parent = experiments_dir(runs_dir)
    if str(ref) == "latest":
        found = [
            path
            for path, record in list_experiments(runs_dir)
            if name is None or record.name == name
        ]
        if not found:
            raise RunError(
                f"no {name or ''} experiment to resume in {parent}; run it without --resume first"
            )
        return found[-1]
    for candidate in (Path(ref), parent / str(ref)):
        if (candidate / RECORD_FILE).is_file():
            return candidate
    raise RunError(f"experiment folder '{ref}' not found (looked in . and {parent})")


# ---------------------------------------------------------------------------------- results
def _updates(spec: Spec, budget: Budget, epochs: int) -> int:
    return math.ceil(budget.fit_samples / spec.train.batch_size) * epochs


@dataclass
class _Done:
    """A finished run and what the experiment measured around it."""

    run: Run
    train_loss: float | None  # inference-mode loss on the training digits at the end
    activations: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def steady_seconds(epoch_seconds: list[float] | tuple[float, ...]) -> list[float]:
    """Each epoch's time with the compilation left out: the first epoch also compiles the
    epoch's program (a second or two), so every epoch counts as the median of the others."""
    seconds = list(epoch_seconds)
    if len(seconds) < 2:
        return seconds
    steady = float(np.median(seconds[1:]))
    return [steady] * len(seconds)


def _variant_results(
    definition: Definition,
    budget: Budget,
    specs: dict[str, Spec],
    done: dict[tuple[str, int], _Done],
    seeds: list[int],
    diverged: set[tuple[str, int]] = frozenset(),
) -> list[dict[str, Any]]:
    results = []
    for variant in definition.variants:
        runs = [done[(variant.name, s)] for s in seeds if (variant.name, s) in done]
        complete = [d for d in runs if d.run.status == "complete"]
        spec = specs[variant.name]

        def last(d: _Done, key: str) -> float | None:
            values = d.run.history.get(key) or [None]
            return values[-1]

        train_loss = [
            d.train_loss if d.train_loss is not None else last(d, "loss") for d in complete
        ]
        val_loss = [last(d, "val_loss") for d in complete]
        gaps = [v - t for v, t in zip(val_loss, train_loss, strict=True) if None not in (v, t)]
        results.append(
            {
                "name": variant.name,
                "description": variant.description,
                "spec": variant.model_dump(exclude={"name", "description"}, exclude_defaults=True),
                "runs": [d.run.name for d in runs],
                "seeds": [d.run.spec.train.seed for d in runs],
                "batch_size": spec.train.batch_size,
                "learning_rate": spec.train.learning_rate,
                "test_accuracy": conclusions.summarize(
                    [d.run.metrics.test_accuracy for d in complete]
                ),
                "final_train_loss": conclusions.summarize(train_loss),
                "final_val_loss": conclusions.summarize(val_loss),
                "generalization_gap": conclusions.summarize(gaps),
                "seconds": conclusions.summarize([d.run.metrics.train_seconds for d in complete]),
                "updates": _updates(spec, budget, budget.epochs),
                "diverged_seeds": sorted(s for name, s in diverged if name == variant.name),
                "activations": {d.run.name: d.activations for d in runs if d.activations},
            }
        )
    return results


def _conclusion(
    definition: Definition, variants: list[dict[str, Any]], curves: dict[str, list[dict]]
) -> list[str]:
    by_name = {
        v["name"]: {
            "test_accuracy": v["test_accuracy"]["values"],
            "generalization_gap": v["generalization_gap"]["values"],
        }
        for v in variants
        if v["test_accuracy"]["values"]
    }
    lines = [
        f"{v['name']} diverged (the loss became NaN) with seed"
        f"{'s' * (len(v['diverged_seeds']) > 1)} {', '.join(map(str, v['diverged_seeds']))}; "
        "its figures cover only the seeds that trained."
        for v in variants
        if v["diverged_seeds"]
    ]
    if not by_name:
        return [*lines, "No finished runs to compare yet."]
    lines += conclusions.conclude(by_name, definition.baseline_name, definition.pairs)
    if "updates" in definition.plots or "seconds" in definition.plots:
        lines += _speed_sentences(variants, curves)
    if definition.activation_stats:
        lines += _saturation_sentences(variants)
    return lines


def _speed_sentences(variants: list[dict[str, Any]], curves: dict[str, list[dict]]) -> list[str]:
    """Epochs, updates and seconds each variant took to reach a validation accuracy target:
    90% of the best final mean validation accuracy of any variant."""
    finals = {
        name: float(np.mean([c["val_accuracy"][-1] for c in runs]))
        for name, runs in curves.items()
        if runs and all(c.get("val_accuracy") for c in runs)
    }
    if not finals:
        return []
    target = round(0.9 * max(finals.values()), 3)
    parts = []
    for variant in variants:
        runs = curves.get(variant["name"]) or []
        if not runs:
            continue
        curve = np.mean([c["val_accuracy"] for c in runs], axis=0)
        seconds = np.mean([np.cumsum(c["epoch_seconds"]) for c in runs], axis=0)  # steady
        index = conclusions.first_reaching(list(curve), target)
        per_epoch = variant["updates"] // max(len(curve), 1)
        if index is None:
            parts.append(f"{variant['name']} not within {len(curve)} epochs")
        else:
            parts.append(
                f"{variant['name']} after {index + 1} epoch{'s' * (index > 0)}, "
                f"{per_epoch * (index + 1):,} updates, {seconds[index]:.1f} s"
            )
    return [
        f"Reaching {target:.1%} validation accuracy (mean over seeds): " + "; ".join(parts) + "."
    ]


def _saturation_sentences(variants: list[dict[str, Any]]) -> list[str]:
    """The first hidden layer's saturated (or dead) fraction at the end, per variant."""
    parts = []
    for variant in variants:
        first: list[float] = []
        label = ""
        for layers in variant["activations"].values():
            if not layers:
                continue
            name, stats = next(iter(layers.items()))
            key = "saturated" if "saturated" in stats else "dead" if "dead" in stats else None
            if key:
                first.append(stats[key][-1])
                label = f"{'saturated' if key == 'saturated' else 'dead'} ({name.split()[-1]})"
        if first:
            parts.append(f"{variant['name']} {np.mean(first):.0%} {label}")
    if not parts:
        return []
    return ["First hidden layer at the end, on 500 validation digits: " + "; ".join(parts) + "."]


# -------------------------------------------------------------------------------- the runner
class _Progress:
    """A Rich progress bar over all epochs of all runs (ETA) on a terminal; otherwise one
    line per finished run."""

    def __init__(self, console, total_epochs: int, total_runs: int, live: bool | None):
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal if live is None else live
        self.total_runs, self.finished = total_runs, 0
        self.bar = None
        if self.live:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("epochs"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.task = self.bar.add_task("experiment", total=total_epochs)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def starting(self, label: str) -> None:
        if self.bar is not None:
            self.bar.update(
                self.task, description=f"[{self.finished + 1}/{self.total_runs}] {label}"
            )

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def diverged(self, label: str) -> None:
        self.finished += 1
        text = f"[{self.finished}/{self.total_runs}] {label}: diverged (the loss became NaN)"
        if self.bar is not None:
            self.bar.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=sys.stderr if self.console.stderr else sys.stdout, flush=True)

    def finished_run(self, label: str, run: Run) -> None:
        self.finished += 1
        accuracy = run.metrics.test_accuracy
        text = (
            f"[{self.finished}/{self.total_runs}] {label}: "
            + (f"test accuracy {accuracy:.2%}" if accuracy is not None else run.status)
            + f", {run.metrics.train_seconds:.1f} s ({run.name})"
        )
        if self.bar is not None:
            self.bar.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=sys.stderr if self.console.stderr else sys.stdout, flush=True)


def _standardize(budget: Budget, data_dir) -> tuple[float, float]:
    """One mean and one deviation of the pixels /255 over the training digits fit sees."""
    from digitlab.data import load_dataset

    (x, _), _ = load_dataset("mnist", data_dir=data_dir)
    pixels = x[: budget.fit_samples].astype(np.float32) / 255.0
    return float(pixels.mean()), float(pixels.std())


def _existing_runs(folder: Path) -> dict[tuple[str, int], Run]:
    """The runs already in an experiment's runs/ folder, by (variant, seed): a complete run
    wins over an interrupted one of the same key."""
    found: dict[tuple[str, int], Run] = {}
    for run in scan_runs(folder / RUNS_FOLDER):
        if not isinstance(run, Run):
            continue
        key = (run.spec.name, run.spec.train.seed)
        if key not in found or (run.status == "complete" and found[key].status != "complete"):
            found[key] = run
    return found


def _budget(definition: Definition, quick: bool, **overrides: int | None) -> Budget:
    base = definition.quick if quick else definition.budget
    given = {key: value for key, value in overrides.items() if value is not None}
    return validate(Budget, {**base.model_dump(), **given}, f"experiment {definition.name}")


def run_experiment(
    definition: Definition,
    *,
    seeds: int | None = None,
    epochs: int | None = None,
    train_samples: int | None = None,
    quick: bool = False,
    learning_rate_policy: str | None = None,
    runs_dir: str | Path | None = None,
    resume: str | Path | None = None,
    data_dir: str | Path | None = None,
    console=None,
    live: bool | None = None,
) -> Outcome:
    """Train every (variant, seed) of `definition`, then write experiment.json, plots, report.

    Args:
        definition: a built-in (`load_definition("dropout")`) or a user's definition.
        seeds, epochs, train_samples: override the budget (seeds 0..N-1).
        quick: the definition's tiny budget (1 epoch, a few hundred digits, 1 seed).
        learning_rate_policy: "same" or "linear" (default: the definition's).
        runs_dir: where `experiments/` lives (default `$DIGITLAB_RUNS_DIR` or ./runs).
        resume: an experiment folder (path, name, or "latest") to complete: only runs it
            lacks are trained, with its own budget; `seeds` may add seeds.
        console: a Rich console for progress (default: stderr).
        live: force the progress bar on or off (default: on a terminal only).

    Returns:
        The `Outcome`; `outcome.interrupted` after Ctrl-C/SIGTERM, with a partial record.

    Raises:
        SpecError: a bad budget or variant; training diverged.
        RunError: the folder can't be written, or the experiment to resume isn't found.
    """
    started, cpu_started = time.perf_counter(), time.process_time()
    if resume is not None:
        folder = find_experiment(resume, definition.name, runs_dir)
        previous = read_record(folder)
        definition = validate(Definition, previous.definition, f"{folder / RECORD_FILE}")
        old = validate(
            Budget,
            {key: previous.budget.get(key) for key in Budget.model_fields},
            f"{folder / RECORD_FILE}: budget",
            error=RunError,
        )
        changed = [
            flag
            for flag, value, was in (
                ("--epochs", epochs, old.epochs),
                ("--train-samples", train_samples, old.train_samples),
            )
            if value is not None and value != was
        ]
        if changed or (learning_rate_policy not in (None, previous.learning_rate_policy)):
            raise SpecError(
                f"--resume completes {folder.name} with its own budget, so "
                f"{', '.join(changed) or '--lr-policy'} can't change; leave them out "
                "(only --seeds may add seeds)"
            )
        budget = validate(Budget, {**old.model_dump(), "seeds": seeds or old.seeds}, "--seeds")
        policy = previous.learning_rate_policy
        quick = bool(previous.budget.get("quick", False))
        created = previous.created
        wall_before, cpu_before = previous.wall_seconds, previous.cpu_seconds
    else:
        budget = _budget(definition, quick, seeds=seeds, epochs=epochs, train_samples=train_samples)
        policy = learning_rate_policy or definition.learning_rate_policy
        folder = new_run_path(check_writable(experiments_dir(runs_dir)), definition.name)
        created, previous, wall_before, cpu_before = datetime.now(), None, 0.0, 0.0
    check_writable(folder / RUNS_FOLDER)
    seed_list = list(range(budget.seeds))

    standardize = (0.0, 1.0)
    if any(v.input_scaling == "standardize" for v in definition.variants):
        standardize = _standardize(budget, data_dir)
    specs = {
        v.name: variant_spec(definition, v, budget, 0, policy, standardize)
        for v in definition.variants
    }
    old_activations: dict[str, dict] = {}
    if previous is not None:
        for v in previous.variants:
            old_activations.update(
                {
                    run: {k: {s: list(x) for s, x in st.items()} for k, st in layers.items()}
                    for run, layers in v.activations.items()
                }
            )

    from digitlab.data import load_dataset
    from digitlab.evaluation import loss_targets

    (x_all, y_all), _ = load_dataset("mnist", data_dir=data_dir)
    fit = budget.fit_samples
    x_fit = x_all[:fit].reshape(fit, -1).astype(np.float32) / 255.0
    val_end = budget.train_samples
    x_batch = x_all[max(fit, val_end - ACTIVATION_BATCH) : val_end].reshape(-1, 784)
    x_batch = x_batch.astype(np.float32) / 255.0

    done: dict[tuple[str, int], _Done] = {}
    trained: list[str] = []
    for key, run in _existing_runs(folder).items():
        if key[1] in seed_list and key[0] in specs:
            done[key] = _Done(run, None, old_activations.get(run.name, {}))
            if run.status == "complete":
                done[key].train_loss = _recorded_train_loss(previous, run.name)

    def write(status: str, final: bool = False) -> ExperimentRecord:
        return _write_record(
            folder, definition, budget, policy, specs, done, diverged, seed_list, status, created,
            (wall_before + time.perf_counter() - started,
             cpu_before + time.process_time() - cpu_started), final=final, quick=quick,
        )  # fmt: skip

    diverged: set[tuple[str, int]] = set()
    if previous is not None:
        diverged = {(v.name, s) for v in previous.variants for s in v.diverged_seeds}
    todo = [
        (v, s)
        for s in seed_list
        for v in definition.variants
        if ((v.name, s) not in done or done[(v.name, s)].run.status != "complete")
        and (v.name, s) not in diverged
    ]
    record = write("interrupted")  # the folder is an experiment from now on, resumable
    status = "complete"
    total_epochs = sum(
        budget.epochs - (done[(v.name, s)].run.epochs_done if (v.name, s) in done else 0)
        for v, s in todo
    )
    with _Progress(console, total_epochs, len(todo), live) as progress, _stop_on_signals() as stop:
        for variant, seed in todo:
            if stop.is_set():
                status = "interrupted"
                break
            label = f"{definition.name} {variant.name} seed {seed}"
            progress.starting(label)
            spec = variant_spec(definition, variant, budget, seed, policy, standardize)
            from digitlab.experiments.callbacks import (
                ActivationStatistics,
                EpochProgress,
                TrainingLoss,
            )

            y_fit = loss_targets(y_all[:fit], spec, 10)
            loss_cb = TrainingLoss(x_fit, y_fit)
            previous_done = done.get((variant.name, seed))
            stats_cb = ActivationStatistics(
                x_batch, previous_done.activations if previous_done else None
            )
            callbacks = [EpochProgress(progress.advance, stop), loss_cb]
            if definition.activation_stats:
                callbacks.append(stats_cb)
            try:
                run = _train_one(
                    spec, folder, variant.name, seed, previous_done, callbacks, data_dir, quick
                )
            except SpecError as exc:
                if str(exc).startswith("training diverged"):  # a result, not a failure
                    diverged.add((variant.name, seed))
                    progress.diverged(label)
                    if (variant, seed) != todo[-1]:
                        write("interrupted")
                    continue
                write("interrupted", final=True)  # keep what is finished, say where
                raise SpecError(f"{label}: {exc}. The finished runs are kept in {folder}") from None
            done[(variant.name, seed)] = _Done(
                run, loss_cb.loss, stats_cb.values if definition.activation_stats else {}
            )
            trained.append(run.name)
            progress.finished_run(label, run)
            if run.status != "complete":
                status = "interrupted"
                break
            if (variant, seed) != todo[-1]:
                write("interrupted")  # a kill from here on loses no finished run
            if stop.is_set() and (variant, seed) != todo[-1]:
                status = "interrupted"
                break
    record = write(status, final=True)
    return Outcome(folder, record, trained)


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """While inside: Ctrl-C and SIGTERM set the yielded event (and `interrupts.requested`).

    `training.train` installs its own handler while it fits, and clears `requested` when it
    starts; a signal that comes between fits (loading data, evaluating, writing the record)
    lands here, and the event, which nothing clears, stops the next fit at its first chunk
    (`EpochProgress`) and the loop before the next run. A second Ctrl-C interrupts at once.
    """
    stop = threading.Event()

    def ask(signum, frame):
        stop.set()
        interrupts.requested.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        previous = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: signals are left alone
        yield stop
        return
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _recorded_train_loss(previous: ExperimentRecord | None, run_name: str) -> float | None:
    """A finished run's inference-mode training loss, from the record being resumed."""
    if previous is None:
        return None
    for variant in previous.variants:
        for name, loss in zip(variant.runs, variant.final_train_loss.values, strict=False):
            if name == run_name:
                return loss
    return None


def _train_one(
    spec, folder, variant, seed, previous: _Done | None, callbacks, data_dir, quick: bool
) -> Run:
    from digitlab import training

    if previous is not None and previous.run.status == "interrupted":
        return training.resume(previous.run, data_dir=data_dir, verbose=0, callbacks=callbacks)
    return training.train(
        spec,
        runs_dir=folder / RUNS_FOLDER,
        name=f"{variant}-seed{seed}",
        data_dir=data_dir,
        verbose=0,
        callbacks=callbacks,
        pictures=not quick,  # ~3 s a run; a report draws curves and confusion matrix itself
        calibrate=False,  # confidence thresholds: longer than the fit, and not compared here
    )


def _curves(
    definition: Definition, done: dict[tuple[str, int], _Done], budget: Budget
) -> dict[str, list[dict]]:
    """Per variant (in the definition's order), per finished run: its per-epoch history,
    seconds and updates per epoch."""
    curves: dict[str, list[dict]] = {v.name: [] for v in definition.variants}
    for (variant, _seed), d in sorted(done.items(), key=lambda item: item[0][1]):
        if d.run.status != "complete":
            continue
        history = {k: list(v) for k, v in d.run.history.items()}
        curves.setdefault(variant, []).append(
            {
                **history,
                "epoch_seconds": steady_seconds(d.run.metrics.epoch_seconds),
                "updates_per_epoch": math.ceil(budget.fit_samples / d.run.spec.train.batch_size),
            }
        )
    return curves


def _write_record(
    folder: Path,
    definition: Definition,
    budget: Budget,
    policy: str,
    specs: dict[str, Spec],
    done: dict[tuple[str, int], _Done],
    diverged: set[tuple[str, int]],
    seeds: list[int],
    status: str,
    created: datetime,
    seconds: tuple[float, float],
    final: bool,
    quick: bool = False,
) -> ExperimentRecord:
    """Compute the figures and the conclusion, draw the plots, write experiment.json (and the
    report, once complete)."""
    from digitlab.experiments import plots

    variants = _variant_results(definition, budget, specs, done, seeds, diverged)
    curves = _curves(definition, done, budget)
    drawn: list[str] = []
    if final and any(curves.values()):
        drawn = [p.name for p in plots.draw(folder, definition, variants, curves)]
    record = ExperimentRecord.model_validate(
        {
            "name": definition.name,
            "question": definition.question,
            "description": definition.description,
            "anchor": definition.anchor,
            "status": status,
            "created": created,
            "updated": datetime.now(),
            "seeds": seeds,
            "budget": {
                **budget.model_dump(),
                "fit_samples": budget.fit_samples,
                "quick": quick,
                "batch_sizes": sorted({s.train.batch_size for s in specs.values()}),
            },
            "learning_rate_policy": policy,
            "baseline": definition.baseline_name,
            "variants": variants,
            "conclusion": _conclusion(definition, variants, curves),
            "statistics": conclusions.STATISTICS,
            "plots": drawn,
            "definition": definition.model_dump(mode="json"),
            "wall_seconds": round(seconds[0], 2),
            "cpu_seconds": round(seconds[1], 2),
        }
    )
    write_text(folder / RECORD_FILE, record.model_dump_json(indent=2) + "\n")
    if final and drawn:
        write_report(folder)
    return record


def write_report(folder: Path) -> Path:
    """The experiment's report.html (`digitlab.report`), its runs found in its runs/ folder."""
    from digitlab.report import write_experiment_report

    return write_experiment_report(folder, runs_dir=folder / RUNS_FOLDER)


def list_experiments(runs_dir: str | Path | None = None) -> list[tuple[Path, ExperimentRecord]]:
    """The experiment folders under RUNS_DIR/experiments with a readable record, oldest first."""
    parent = experiments_dir(runs_dir)
    found = []
    for path in sorted(parent.iterdir()) if parent.is_dir() else ():
        try:
            found.append((path, read_record(path)))
        except (RunError, SpecError):
            continue
    return found
