"""How long `import digitlab` takes, and that it loads no Keras, JAX or NumPy (issue 13).

Each repeat is a fresh interpreter, so nothing is cached in `sys.modules`. Reported, median
(min–max): the import itself (time.perf_counter around `import digitlab`), the whole
process (`python -c "import digitlab"`) next to a bare `python -c pass`, and the first use
of `digitlab.train` (which imports Keras and JAX). Target: the import ≤ 0.5 s.

    .venv/bin/python benchmarks/bench_import.py --repeats 10 [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

HEAVY = ("keras", "jax", "numpy", "matplotlib", "sklearn", "optuna", "fastapi")
PROBE = f"""
import json, sys, time
t = time.perf_counter()
import digitlab
imported = time.perf_counter() - t
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
t = time.perf_counter()
digitlab.train
first_use = time.perf_counter() - t
print(json.dumps({{"import_s": imported, "heavy": heavy, "first_train_s": first_use}}))
"""


def _process_seconds(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - start


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.4f} ({min(values):.4f}–{max(values):.4f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    probes = []
    for _ in range(args.repeats):
        out = subprocess.run([sys.executable, "-c", PROBE], check=True, capture_output=True)
        probes.append(json.loads(out.stdout))
    result = {
        "import_s": _summary([p["import_s"] for p in probes]),
        "heavy_modules_after_import": sorted({m for p in probes for m in p["heavy"]}),
        "process_import_s": _summary(
            [_process_seconds("import digitlab") for _ in range(args.repeats)]
        ),
        "process_bare_s": _summary([_process_seconds("pass") for _ in range(args.repeats)]),
        "first_train_attribute_s": _summary([p["first_train_s"] for p in probes]),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
