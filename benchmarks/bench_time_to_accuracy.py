"""Time to accuracy (issue 14): keras-io's Simple MNIST convnet against `digitlab train
--preset fast` and `--preset cnn`, interleaved, several seeds each, on this machine's CPU.

Every run is its own process, timed from its start as a user would time the command:
- `keras-io`: the published example (Conv 3×3 32 relu → MaxPool 2 → Conv 3×3 64 relu →
  MaxPool 2 → Flatten → Dropout 0.5 → Dense 10 softmax; adam, categorical cross-entropy,
  batch 128, 15 epochs, validation_split 0.1) on Keras 3 + JAX, with its data from
  `digitlab.load_dataset` instead of a download, a seed, and `model.save` at the end;
  the child process is this file with `--child`;
- `fast`, `cnn`: `digitlab train --preset NAME --seed S --validation-split 0.1`, the same
  split as keras-io's, so every contender reports validation accuracy after every epoch.

Each epoch's line is stamped when the parent reads it (the child's output is unbuffered),
which gives the wall time at which validation accuracy first reached 99.0% and 99.5%.
Recorded per run: whole-process wall time (start to exit, the model saved), training seconds,
test accuracy on the 10,000 test digits, and for digitlab's runs the handwriting checks of
the test suite (tests/images.py's drawn digits at 4 stroke widths; 200 real test digits
drawn big and preprocessed). The table and the plot go into benchmarks/RESULTS.md between
the markers of its "Time to accuracy" section, and the figures to a JSON file.

    .venv/bin/python benchmarks/bench_time_to_accuracy.py                 # 3 seeds, ~1 h
    .venv/bin/python benchmarks/bench_time_to_accuracy.py --contenders fast --seeds 0
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
PLOT = HERE / "time_to_accuracy.png"
BEGIN, END = "<!-- time-to-accuracy:begin -->", "<!-- time-to-accuracy:end -->"
CONTENDERS = ("keras-io", "fast", "cnn")
THRESHOLDS = (0.990, 0.995)
VAL_ACCURACY = re.compile(r"val_accuracy: ([0-9.]+)")


# --- the keras-io example, in a child process ------------------------------------------------


def keras_io_convnet(seed: int, out: Path) -> None:
    """keras-io's "Simple MNIST convnet" (fchollet, 2015, updated for Keras 3), as published
    apart from the data source, the seed, `verbose=2` (one line per epoch, which the parent
    stamps) and the save at the end."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import keras
    import numpy as np

    import digitlab

    keras.utils.set_random_seed(seed)
    (x_train, y_train), (x_test, y_test) = digitlab.load_dataset("mnist")
    x_train = np.expand_dims(x_train.astype("float32") / 255, -1)
    x_test = np.expand_dims(x_test.astype("float32") / 255, -1)
    y_train = keras.utils.to_categorical(y_train, 10)
    y_test = keras.utils.to_categorical(y_test, 10)
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28, 1)),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(x_train, y_train, batch_size=128, epochs=15, validation_split=0.1, verbose=2)
    train_seconds = time.perf_counter() - started
    _, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    model.save(out.with_suffix(".keras"))
    figures = {"train_seconds": train_seconds, "test_accuracy": float(test_accuracy)}
    out.write_text(json.dumps(figures))


# --- the parent ------------------------------------------------------------------------------


def run_one(contender: str, seed: int, workdir: Path) -> dict:
    """Run one contender once; its figures, with each epoch's validation accuracy stamped."""
    out = workdir / f"{contender}-seed{seed}.json"
    if contender == "keras-io":
        command = [sys.executable, __file__, "--child", "--seed", str(seed), "--out", str(out)]
    else:
        command = [sys.executable, "-m", "digitlab", "train", "--preset", contender,
                   "--seed", str(seed), "--validation-split", "0.1", "--name",
                   f"{contender}-seed{seed}", "--runs-dir", str(workdir / "runs")]  # fmt: skip
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", "KERAS_BACKEND": "jax"}
    curve: list[tuple[float, float]] = []
    started = time.perf_counter()
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment
    ) as process:
        for line in process.stdout:
            match = VAL_ACCURACY.search(line)
            if match:
                curve.append((time.perf_counter() - started, float(match.group(1))))
    wall = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{contender} seed {seed} failed (exit {process.returncode})")
    row = {"contender": contender, "seed": seed, "wall_seconds": wall, "curve": curve}
    if contender == "keras-io":
        row.update(json.loads(out.read_text()))
    else:
        from digitlab.runs import load_run

        run = load_run(sorted((workdir / "runs").glob(f"*-{contender}-seed{seed}"))[-1])
        row.update(
            train_seconds=run.metrics.train_seconds,
            test_accuracy=run.metrics.test_accuracy,
            **handwriting(run),
        )
    for threshold in THRESHOLDS:
        reached = [seconds for seconds, accuracy in curve if accuracy >= threshold]
        row[f"to_{threshold:.3f}"] = reached[0] if reached else None
    return row


@functools.cache
def _handwriting_checks():
    """The test suite's images, preprocessed once: (drawn digits, their labels, real digits
    drawn big, their labels)."""
    import numpy as np

    sys.path.insert(0, str(HERE.parent / "tests"))
    from images import draw_digit, drawn_big

    from digitlab.data import load_dataset
    from digitlab.preprocess import load_image, preprocess

    widths = (1, 3, 18, 40)  # test_preprocess.py's stroke widths
    drawn = np.stack([preprocess(draw_digit(d, width=w)) for w in widths for d in range(10)])
    (_, _), (x_test, y_test) = load_dataset("mnist")  # test_preprocess.py's 200 big digits
    big = np.stack([preprocess(load_image(png)) for png in drawn_big(x_test[:200])])
    return drawn, np.tile(np.arange(10), len(widths)), big, y_test[:200]


def handwriting(run) -> dict:
    """The test suite's handwriting checks as scores: drawn digits, real digits drawn big."""
    drawn, drawn_labels, big, big_labels = _handwriting_checks()
    return {
        "drawn_right": int((run.predict_proba(drawn).argmax(axis=1) == drawn_labels).sum()),
        "drawn_total": len(drawn_labels),
        "big_right": int((run.predict_proba(big).argmax(axis=1) == big_labels).sum()),
        "big_total": len(big_labels),
    }


def _mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _reached(rows: list[dict], key: str) -> str:
    times = [row[key] for row in rows if row[key] is not None]
    if not times:
        return f"never (0/{len(rows)})"
    return f"{statistics.median(times):.0f} s ({len(times)}/{len(rows)} runs)"


def table(rows: list[dict]) -> str:
    """The markdown table: one line per contender, means ± sample std over its seeds."""
    lines = [
        "| contender | seeds | whole process (s) | training (s) | test accuracy (%) "
        "| first ≥ 99.0% val, median | first ≥ 99.5% val, median | handwriting: drawn, big |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for contender in dict.fromkeys(row["contender"] for row in rows):
        own = [row for row in rows if row["contender"] == contender]
        hand = (
            f"{sum(r['drawn_right'] for r in own)}/{sum(r['drawn_total'] for r in own)}, "
            f"{sum(r['big_right'] for r in own)}/{sum(r['big_total'] for r in own)}"
            if "drawn_right" in own[0]
            else "–"
        )
        lines.append(
            f"| `{contender}` | {', '.join(str(r['seed']) for r in own)} "
            f"| {_mean_std([r['wall_seconds'] for r in own])} "
            f"| {_mean_std([r['train_seconds'] for r in own])} "
            f"| {_mean_std([r['test_accuracy'] for r in own], 100, 2)} "
            f"| {_reached(own, 'to_0.990')} | {_reached(own, 'to_0.995')} | {hand} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Validation accuracy against wall seconds from the command's start, every run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = dict(zip(CONTENDERS, ("tab:gray", "tab:orange", "tab:blue"), strict=True))
    figure, axes = plt.subplots(figsize=(8, 4.5))
    labelled = set()
    for row in rows:
        seconds, accuracy = zip(*row["curve"], strict=True) if row["curve"] else ((), ())
        contender = row["contender"]
        axes.plot(seconds, [100 * a for a in accuracy], marker="o", markersize=3,
                  color=colors.get(contender), alpha=0.8,
                  label=None if contender in labelled else contender)  # fmt: skip
        labelled.add(contender)
    for threshold in THRESHOLDS:
        axes.axhline(100 * threshold, color="black", linewidth=0.6, linestyle=":")
    axes.set_xscale("log")
    axes.set_ylim(98.0, 100.0)
    axes.set_xlabel("wall seconds since the command started (log scale)")
    axes.set_ylabel("validation accuracy after each epoch (%)")
    axes.set_title("Time to accuracy on a 2-core CPU (each line one seed)")
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_results(text: str) -> None:
    """Replace what is between the markers in RESULTS.md (they must be there)."""
    results = RESULTS.read_text()
    if BEGIN not in results or END not in results:
        raise SystemExit(f"{RESULTS} has no {BEGIN} … {END} markers")
    head, rest = results.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    temporary = RESULTS.with_suffix(".md.tmp")
    temporary.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")
    temporary.replace(RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--contenders", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--json", type=Path, default=HERE / "time_to_accuracy.json")
    parser.add_argument("--no-results", action="store_true", help="don't touch RESULTS.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        keras_io_convnet(args.seed, args.out)
        return
    workdir = Path(tempfile.mkdtemp(prefix="bench-tta-"))
    rows = []
    for seed in args.seeds:  # interleaved: every contender once per seed, in turn
        for contender in args.contenders:
            load = os.getloadavg()[0]
            row = run_one(contender, seed, workdir)
            row["load_before"] = load
            rows.append(row)
            print(f"{contender} seed {seed}: {row['test_accuracy']:.2%} test, "
                  f"{row['wall_seconds']:.1f} s whole process, {row['train_seconds']:.1f} s "
                  f"training (load before {load:.1f})", flush=True)  # fmt: skip
            args.json.write_text(json.dumps(rows, indent=1))  # a kill keeps finished runs
    text = table(rows)
    print(text)
    if not args.no_results:
        plot(rows, PLOT)
        stamp = time.strftime("%Y-%m-%d")
        write_results(
            f"Measured {stamp} with `benchmarks/bench_time_to_accuracy.py --seeds "
            f"{' '.join(map(str, args.seeds))}` (figures: `{args.json.name}`).\n\n{text}\n\n"
            f"![validation accuracy against wall seconds]({PLOT.name})"
        )


if __name__ == "__main__":
    main()
