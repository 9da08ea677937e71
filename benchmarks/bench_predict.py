"""Inference through `Run.predict_proba`, the path `predict`, `evaluate`-free callers and
`serve` use: the 10,000 test digits at once, and one digit at a time after warm-up.

    .venv/bin/python benchmarks/bench_predict.py --run runs/<run>   (default: latest)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from digitlab.data import load_dataset
from digitlab.runs import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="latest")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    run = load_run(args.run)
    _, (x, y) = load_dataset(run.dataset.name)
    for _ in range(3):  # warm-up: load the model, compile each batch shape
        run.predict_proba(x)
        run.predict_proba(x[:1])
    batch = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        probabilities = run.predict_proba(x)
        batch.append(time.perf_counter() - start)
    single = []
    for i in range(500):
        start = time.perf_counter()
        run.predict_proba(x[i : i + 1])
        single.append(time.perf_counter() - start)
    print(
        f"{len(x)} digits: median {np.median(batch):.4f} s; one digit: median "
        f"{np.median(single) * 1000:.3f} ms, p99 {np.percentile(single, 99) * 1000:.3f} ms; "
        f"accuracy {(probabilities.argmax(axis=1) == y).mean():.4f}"
    )


if __name__ == "__main__":
    main()
