"""What TensorBoard events cost the seed preset's epoch: the fit with and without
`digitlab.events.EpochEvents` (scalars, weight and activation histograms once per epoch).

Runs alternate (without, with, with, without, ...) so a neighbour's load on the shared
cores hits both alike. Reported, median (min–max) over repeats:
- s/epoch: wall time from one epoch's end to the next's (training, validation and every
  callback), epochs 2 and later (the first compiles);
- events ms/epoch: the time spent inside `EpochEvents.on_epoch_end` itself, epochs 2 and
  later (the first also compiles the activations' forward pass);
- write ms: `EpochEvents.write` at the end (event file, config text, no pictures).

    .venv/bin/python benchmarks/bench_board.py --repeats 3 --epochs 4 [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import digitlab  # noqa: F401  sets KERAS_BACKEND before keras is imported


class _Timed:
    """Wraps `EpochEvents.on_epoch_end` to record how long each call takes."""

    def __init__(self, events):
        self.seconds: list[float] = []
        inner = events.on_epoch_end

        def on_epoch_end(epoch, logs=None):
            start = time.perf_counter()
            inner(epoch, logs)
            self.seconds.append(time.perf_counter() - start)

        events.on_epoch_end = on_epoch_end


def _fit_once(with_events: bool, epochs: int, x, y) -> dict[str, float]:
    import keras

    from digitlab import fastfit
    from digitlab.events import EpochEvents
    from digitlab.model import PIXEL_SCALE, build_model, compile_model
    from digitlab.presets import get_preset

    spec = get_preset("seed")

    class EpochEnds(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.ends = [time.perf_counter()]

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(time.perf_counter())

    keras.utils.set_random_seed(0)
    model = build_model(spec, num_classes=10)
    compile_model(model, spec, num_classes=10)
    ends = EpochEnds()
    callbacks = [ends]
    events = timed = None
    if with_events:
        events = EpochEvents(x, input_scale=PIXEL_SCALE)
        timed = _Timed(events)
        callbacks.insert(0, events)  # before the clock, as in training._fit
    fastfit.fit(model, x, y, batch_size=spec.train.batch_size, epochs=epochs,
                validation_split=spec.train.validation_split, callbacks=callbacks,
                verbose=0, seed=0, input_scale=PIXEL_SCALE)  # fmt: skip
    periods = [b - a for a, b in zip(ends.ends[1:], ends.ends[2:], strict=False)]
    result = {"s_per_epoch": statistics.median(periods)}
    if events is not None:
        result["events_ms_per_epoch"] = 1000 * statistics.median(timed.seconds[1:])
        result["events_ms_first_epoch"] = 1000 * timed.seconds[0]
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            events.write(Path(folder) / "tensorboard", step=epochs, config_text="{}")
            result["write_ms"] = 1000 * (time.perf_counter() - start)
    return result


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.4g} ({min(values):.4g}–{max(values):.4g})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()

    from digitlab.data import load_dataset

    (x_train, y_train), _ = load_dataset("mnist")
    x, y = x_train.reshape(len(x_train), -1), y_train
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for repeat in range(args.repeats):
        order = (False, True) if repeat % 2 == 0 else (True, False)
        for with_events in order:
            runs[with_events].append(_fit_once(with_events, args.epochs, x, y))
    without = [r["s_per_epoch"] for r in runs[False]]
    with_ = [r["s_per_epoch"] for r in runs[True]]
    overhead = [w / o - 1 for w, o in zip(with_, without, strict=True)]
    events_share = [r["events_ms_per_epoch"] / 1000 / r["s_per_epoch"] for r in runs[True]]
    result = {
        "repeats": args.repeats,
        "epochs": args.epochs,
        "load_1min": os.getloadavg()[0],
        "without_s_per_epoch": without,
        "with_s_per_epoch": with_,
        "overhead": overhead,
        "events_ms_per_epoch": [r["events_ms_per_epoch"] for r in runs[True]],
        "events_ms_first_epoch": [r["events_ms_first_epoch"] for r in runs[True]],
        "events_share_of_epoch": events_share,
        "write_ms": [r["write_ms"] for r in runs[True]],
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"seed preset, batch 32, {args.epochs} epochs x {args.repeats} repeats, interleaved")
    print(f"without events   s/epoch   {_summary(without)}")
    print(f"with events      s/epoch   {_summary(with_)}")
    print(f"pairwise overhead          {_summary([100 * o for o in overhead])} %")
    print(f"events, in on_epoch_end    {_summary(result['events_ms_per_epoch'])} ms/epoch")
    print(f"  share of the epoch       {_summary([100 * s for s in events_share])} %")
    print(f"  first epoch (compiles)   {_summary(result['events_ms_first_epoch'])} ms")
    print(f"write at save              {_summary(result['write_ms'])} ms")
    print(f"load average (1 min)       {result['load_1min']:.2f}")


if __name__ == "__main__":
    main()
