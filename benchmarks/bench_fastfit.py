"""The seed preset trained by `model.fit` or by `digitlab.fastfit`, in this process; one JSON line.

Measures what the issue asks of the training loop itself: seconds per epoch (the first
epoch includes compiling), test accuracy, peak RSS, and inference time (10,000 test digits,
and one digit after warm-up) through `model.predict`, `predict_on_batch` and
`fastfit.predictor`.

    .venv/bin/python benchmarks/bench_fastfit.py --loop fastfit --seed 0 [--data mnist.npz]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

START = time.perf_counter()

import digitlab  # noqa: E402,F401  sets KERAS_BACKEND before keras is imported


def _load(data: str | None):
    import numpy as np

    if data:
        with np.load(data) as f:
            return (f["x_train"], f["y_train"]), (f["x_test"], f["y_test"])
    from digitlab.data import load_dataset

    return load_dataset("mnist")


def _inference(model, x_test_uint8) -> dict[str, float]:
    """Seconds for the 10,000 test digits (preprocessing included) and for one digit."""
    import numpy as np

    from digitlab import fastfit
    from digitlab.model import prepare_inputs

    def best_of(fn, repeats):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    one = x_test_uint8[:1]
    predict = fastfit.predictor(model)
    for _ in range(3):  # warm-up: compile each batch-size bucket used below
        predict(prepare_inputs(x_test_uint8))
        predict(prepare_inputs(one))
        model.predict_on_batch(prepare_inputs(one))
        model.predict(prepare_inputs(x_test_uint8), batch_size=1024, verbose=0)
    out = {
        "predict_10k_s": best_of(
            lambda: model.predict(prepare_inputs(x_test_uint8), batch_size=1024, verbose=0), 5
        ),
        "predictor_10k_s": best_of(lambda: predict(prepare_inputs(x_test_uint8)), 5),
        "predict_on_batch_1_ms": 1000
        * best_of(lambda: model.predict_on_batch(prepare_inputs(one)), 200),
        "predictor_1_ms": 1000 * best_of(lambda: predict(prepare_inputs(one)), 200),
    }
    expected = model.predict(prepare_inputs(x_test_uint8), batch_size=1024, verbose=0)
    assert np.allclose(predict(prepare_inputs(x_test_uint8)), expected, atol=1e-5)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("fit", "fastfit"), default="fastfit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--data", help="an .npz with x_train, y_train, x_test, y_test")
    parser.add_argument("--inference", action="store_true", help="also time inference")
    args = parser.parse_args()

    import jax
    import keras
    from epoch_times import EpochTimes  # benchmarks/, the script's own folder

    from digitlab import fastfit
    from digitlab.model import build_model, compile_model, prepare_inputs
    from digitlab.presets import get_preset

    (x_train, y_train), (x_test, y_test) = _load(args.data)
    spec = get_preset("seed")
    keras.utils.set_random_seed(args.seed)
    model = build_model(spec)
    compile_model(model, spec)
    # fit gets the notebook's float32 copy; fastfit keeps uint8 pixels and scales per batch.
    x = prepare_inputs(x_train) if args.loop == "fit" else x_train.reshape(-1, 784)

    times = EpochTimes()
    train_start = time.perf_counter()
    if args.loop == "fit":
        model.fit(x, y_train, batch_size=32, epochs=args.epochs, callbacks=[times], verbose=0)
    else:
        fastfit.fit(
            model,
            x,
            y_train,
            batch_size=32,
            epochs=args.epochs,
            callbacks=[times],
            verbose=0,
            seed=args.seed,
            input_scale=1 / 255,
        )
    train_seconds = time.perf_counter() - train_start
    del x
    test = model.evaluate(
        prepare_inputs(x_test), y_test, batch_size=1024, verbose=0, return_dict=True
    )
    result = {
        "loop": args.loop,
        "seed": args.seed,
        "device": str(jax.devices()[0]),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "epoch_seconds": [round(s, 4) for s in times.seconds],
        "steady_epoch_s": statistics.median(times.seconds[2:]) if len(times.seconds) > 2 else None,
        "train_s": round(train_seconds, 3),
        "test_accuracy": test["accuracy"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "process_s": round(time.perf_counter() - START, 3),
        "load_average": os.getloadavg(),
    }
    if args.inference:
        result.update(_inference(model, x_test))
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
