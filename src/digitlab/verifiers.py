"""The verifiers (`outliers`), trained once per set of training digits and kept in the cache.

A verifier reads the digits, not the run's network: every run trained on the same digits
(`digitlab train --preset seed` again, a test suite's runs) would fit the same weights from
the same seed. `cached_verifier` fits them once, in tens of seconds, and keeps them in
`$XDG_CACHE_HOME/digitlab/verifiers/`, keyed by everything that decides them;
`cached_verifiers` gives a run its `outliers.MEMBERS` of them, stacked.
"""

from __future__ import annotations

import contextlib
import hashlib
import zipfile
from importlib import metadata

import numpy as np

from digitlab.data import cache_dir
from digitlab.files import atomic_path
from digitlab.outliers import (
    BATCH_SIZE,
    BINS,
    CELL,
    EPOCHS,
    HIDDEN,
    KINDS,
    MAX_DIGITS,
    MEMBERS,
    NON_DIGITS_PER_DIGIT,
    SHIFTS,
    VERSION,
    WEIGHTS,
    stacked,
    train_verifier,
)


def cached_verifiers(
    digits: np.ndarray, labels: np.ndarray, num_classes: int, level: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """A run's `MEMBERS` verifiers (`cached_verifier` with seeds 0, 1, …), their weights
    stacked (`outliers.stacked`), and how many examples of each kind they saw in all."""
    members, seen = [], {}
    for seed in range(MEMBERS):
        weights, counts = cached_verifier(digits, labels, num_classes, seed, level)
        members.append(weights)
        for kind, n in counts.items():
            seen[kind] = seen.get(kind, 0) + n
    return stacked(members), seen


def cached_verifier(
    digits: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0, level: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """`outliers.train_verifier`'s result, trained once per set of digits and kept in the cache
    (`$XDG_CACHE_HOME/digitlab/verifiers/`), keyed by the digits, labels, seed, `level`, this
    module's settings and the Keras and JAX versions: what decides the weights. A cached file
    that can't be read, or holds other shapes, is trained again and replaced."""
    key = _verifier_key(digits, labels, num_classes, seed, level)
    path = cache_dir() / "verifiers" / f"{key}.npz"
    with contextlib.suppress(OSError, ValueError, KeyError, zipfile.BadZipFile):
        with np.load(path, allow_pickle=False) as stored:
            weights = {f"verifier_{name}": stored[name] for name in WEIGHTS}
            counts = {k.removeprefix("count_"): int(stored[k]) for k in stored if "count_" in k}
        if weights["verifier_kernel_1"].shape == (HIDDEN, num_classes + 1):
            return weights, counts
    weights, counts = train_verifier(digits, labels, num_classes, seed, level)
    with contextlib.suppress(OSError):  # no cache to write: the run still has its verifier
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            np.savez(
                out,
                **{name: weights[f"verifier_{name}"] for name in WEIGHTS},
                **{f"count_{kind}": np.int64(n) for kind, n in counts.items()},
            )
    return weights, counts


def _verifier_key(
    digits: np.ndarray, labels: np.ndarray, num_classes: int, seed: int, level: bool
) -> str:
    versions = [_version(package) for package in ("keras", "jax", "jaxlib", "numpy")]
    levelled = ("levelled",) if level else ()  # a key of before levelling existed stays valid
    settings = (VERSION, num_classes, seed, *levelled, CELL, BINS, HIDDEN, EPOCHS, BATCH_SIZE,
                MAX_DIGITS, NON_DIGITS_PER_DIGIT, KINDS, SHIFTS, *versions)  # fmt: skip
    digest = hashlib.sha256(repr(settings).encode())
    digest.update(np.ascontiguousarray(digits, np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, np.int64).tobytes())
    return digest.hexdigest()[:32]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""
