"""The verifier: a second, small network per run that says "not a digit" and doubts answers.

`train_verifier` fits it from the run's training digits, a shifted copy of each
(`outliers.shifted`) and non-digits (`outliers.not_digits`). It reads the digit differently
from the run's own network (a histogram of oriented gradients, Dalal & Triggs 2005, of the
image moved so its centre of mass is the frame's middle, into one hidden layer of `HIDDEN`
relu units) and answers in one more class than the run: "not a digit". The verdict
(`digitlab.confidence`) flags an answer as "not a digit" when the verifier gives that class
too much probability, and as "unsure" when the verifier gives the run's answer too little:
two networks built differently rarely make the same confident mistake (the argument of deep
ensembles, Lakshminarayanan et al. 2017). A run has `MEMBERS` verifiers, each fitted from its
own seed (its own examples, order and start); the verdict reads their average
(`verifier_probabilities`, in NumPy, from the weights stored with the run: `stacked`).

A verifier depends on the training digits, not on the run's network: every run trained on
the same digits (`digitlab train --preset seed` again, a test suite's runs) would fit the
same weights from the same seed. `cached_verifier` fits each once, in tens of seconds, and
keeps it in `$XDG_CACHE_HOME/digitlab/verifiers/`, keyed by everything that decides it;
`cached_verifiers` gives a run its `MEMBERS` of them, stacked.
"""

from __future__ import annotations

import contextlib
import hashlib
import zipfile
from collections.abc import Callable
from importlib import metadata

import numpy as np

from digitlab.background import level_background
from digitlab.data import PIXEL_MAX, cache_dir
from digitlab.files import atomic_path
from digitlab.outliers import KINDS, SHIFTS, not_digits, shifted

# ---------------------------------------------------------------------------- the verifier
CELL, BINS = 4, 9  # histogram cells of 4×4 px, 9 orientations over 180° (Dalal & Triggs)
HIDDEN = 256  # the verifier's relu units
EPOCHS, BATCH_SIZE = 8, 128
MAX_DIGITS = 40_000  # training digits the verifier sees, and a shifted copy of each
NON_DIGITS_PER_DIGIT = 0.87  # non-digits made per training digit (a fifth of them glyphs)
MIN_DIGITS = 1_000  # fewer training digits than this: no verifier (a run of a few hundred)
WEIGHTS = ("kernel_0", "bias_0", "kernel_1", "bias_1")  # stored as verifier_<name>
VERSION = 2  # of what the same digits give: bump it when the examples, features or fit change
# Verifiers per run, each fitted from its own seed (examples, order, start) and averaged: one
# verifier's share of non-digits flagged moved by up to 4 points from seed to seed; two
# averaged flagged at least as many as the better one, in each of six presets
# (benchmarks/RESULTS.md, "The verdict under shift": glyphs, and two verifiers averaged).
MEMBERS = 2


def centred(images: np.ndarray) -> np.ndarray:
    """The images moved, by whole pixels, so each one's centre of mass is the frame's middle
    ((14, 14) in 28×28, where MNIST and `preprocess` put it): a digit off the centre reads
    as the same digit."""
    x = np.asarray(images, dtype=np.float32)
    _, height, width = x.shape
    ink = np.maximum(x.sum(axis=(1, 2)), 1e-9)
    row = (x.sum(axis=2) * np.arange(height)).sum(axis=1) / ink
    col = (x.sum(axis=1) * np.arange(width)).sum(axis=1) / ink
    shifts = np.floor(np.stack([height / 2 - row, width / 2 - col], axis=1) + 0.5)
    out = np.zeros_like(images)
    for i, (down, right) in enumerate(shifts.astype(int)):
        rows = slice(max(0, -down), height - max(0, down))
        cols = slice(max(0, -right), width - max(0, right))
        source = images[i, rows, cols]
        top, left = max(0, down), max(0, right)
        out[i, top : top + source.shape[0], left : left + source.shape[1]] = source
    return out


def features(images: np.ndarray) -> np.ndarray:
    """What the verifier reads: each centred image's histogram of oriented gradients, in
    `CELL`-px cells, each 2×2 block of cells normalised (N×(6·6·4·9) for 28×28)."""
    images = np.asarray(images)
    chunk = 8192  # images at a time: the gradients of 8,192 take ~50 MB
    return (
        np.concatenate(
            [_gradient_histograms(images[at : at + chunk]) for at in range(0, len(images), chunk)]
        )
        if len(images)
        else np.zeros((0, 0), np.float32)
    )


def _gradient_histograms(images: np.ndarray) -> np.ndarray:
    x = centred(images).astype(np.float32) / np.float32(PIXEL_MAX)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1)))  # beyond the frame is background, 0
    gy = padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]  # central differences (× 2: the
    gx = padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]  # blocks are normalised anyway)
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)  # unsigned: a stroke's two edges agree
    which = np.minimum((angle * (BINS / np.pi)).astype(np.intp), BINS - 1)
    n, height, width = x.shape
    rows, cols = height // CELL, width // CELL
    cell_row = np.minimum(np.arange(height) // CELL, rows - 1)  # a ragged edge joins the last
    cell_col = np.minimum(np.arange(width) // CELL, cols - 1)
    cell = (cell_row[:, None] * cols + cell_col[None, :]) * BINS
    slot = (np.arange(n)[:, None, None] * (rows * cols * BINS) + cell) + which
    cells = np.bincount(slot.ravel(), magnitude.ravel(), n * rows * cols * BINS)
    cells = cells.reshape(n, rows, cols, BINS).astype(np.float32)
    blocks = np.concatenate(
        [cells[:, i : rows - 1 + i, j : cols - 1 + j] for i in (0, 1) for j in (0, 1)], axis=3
    )
    blocks /= np.sqrt((blocks**2).sum(axis=3, keepdims=True) + 1e-3)
    return blocks.reshape(n, -1)


def training_set(
    digits: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0, level: bool = False
):
    """The verifier's examples: up to `MAX_DIGITS` training digits, a shifted copy of each
    (`shifted`), and `NON_DIGITS_PER_DIGIT` non-digits per digit, labelled `num_classes`;
    shuffled; with `level`, each levelled as a run that levels backgrounds reads it
    (`background.level_background`). (Shifting half of the digits instead of copying them
    all measured 80.6% of non-digits flagged against 82.3%, for 37 s of CPU against 50:
    RESULTS, the verdict.)

    Returns:
        (images, targets, counts): uint8 N×28×28, int targets, how many of each kind.
    """
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(digits), min(len(digits), MAX_DIGITS), replace=False)
    clean, classes = digits[chosen], np.asarray(labels)[chosen]
    others = not_digits(round(len(chosen) * NON_DIGITS_PER_DIGIT), digits, labels, seed=seed)
    counts = {"digits": len(clean), "shifted": len(clean)}
    counts |= {kind: len(made) for kind, made in others.items()}
    images = np.concatenate([clean, shifted(clean, rng), *others.values()])
    targets = np.concatenate([classes, classes])
    targets = np.concatenate([targets, np.full(len(images) - len(targets), num_classes)])
    if level:
        images = level_background(images)
    order = rng.permutation(len(images))
    return images[order], targets[order].astype(np.int32), counts


def train_verifier(
    digits: np.ndarray, labels: np.ndarray, num_classes: int, seed: int = 0, level: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Fit the verifier (Keras, a fixed seed: the same digits give the same weights).

    Args:
        digits: uint8 N×28×28 training digits (the run's own).
        labels: their classes, 0 … num_classes − 1.
        level: the run levels backgrounds: so do the verifier's examples (`training_set`).

    Returns:
        The weights (`verifier_kernel_0`, … for `Run.store_calibration`) and how many
        examples of each kind it saw.
    """
    import keras

    from digitlab import fastfit

    images, targets, counts = training_set(digits, labels, num_classes, seed, level)
    x = features(images)
    model = keras.Sequential(
        [
            keras.Input((x.shape[1],)),
            keras.layers.Dense(
                HIDDEN, "relu", kernel_initializer=keras.initializers.GlorotUniform(seed)
            ),
            keras.layers.Dense(
                num_classes + 1,
                "softmax",
                kernel_initializer=keras.initializers.GlorotUniform(seed + 1),
            ),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    # an epoch per compiled program, shuffled from `seed` (as `digitlab train` fits)
    fastfit.fit(model, x, targets, batch_size=BATCH_SIZE, epochs=EPOCHS, verbose=0, seed=seed)
    weights = [np.asarray(w, np.float32) for w in model.get_weights()]
    return {f"verifier_{name}": w for name, w in zip(WEIGHTS, weights, strict=True)}, counts


def verifier_probabilities(weights: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """The verifiers' probabilities for uint8 N×28×28 images, averaged over the members
    (weights stacked on a first axis, as `stacked` makes them; a run calibrated with one
    verifier has none): N×(classes + 1), the last column "not a digit"."""
    w = [np.asarray(weights[f"verifier_{name}"]) for name in WEIGHTS]
    if w[0].ndim == 2:  # one verifier
        w = [array[None] for array in w]
    x = features(images)
    out = 0.0
    for kernel_0, bias_0, kernel_1, bias_1 in zip(*w, strict=True):
        logits = np.maximum(x @ kernel_0 + bias_0, 0) @ kernel_1 + bias_1
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        out = out + odds / odds.sum(axis=1, keepdims=True)
    return out / len(w[0])


def stacked(members: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Several verifiers' weights (`train_verifier`'s) as one set, each array stacked on a
    first axis: what `verifier_probabilities` averages and a run stores."""
    return {name: np.stack([member[name] for member in members]) for name in members[0]}


# ------------------------------------------------------------------------------- the cache
def cached_verifiers(
    digits: np.ndarray, labels: np.ndarray, num_classes: int, level: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """A run's `MEMBERS` verifiers (`cached_verifier` with seeds 0, 1, …), their weights
    stacked (`stacked`), and how many examples of each kind they saw in all."""
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
    """`train_verifier`'s result, trained once per set of digits and kept in the cache
    (`$XDG_CACHE_HOME/digitlab/verifiers/`), keyed by the digits, labels, seed, `level`, this
    module's settings and the Keras and JAX versions: what decides the weights. A cached file
    that can't be read, or holds other shapes, is trained again and replaced."""
    return cached_weights(
        "verifiers",
        _verifier_key(digits, labels, num_classes, seed, level),
        "verifier_",
        WEIGHTS,
        lambda weights: weights["verifier_kernel_1"].shape == (HIDDEN, num_classes + 1),
        lambda: train_verifier(digits, labels, num_classes, seed, level),
    )


def cached_weights(
    folder: str,
    key: str,
    prefix: str,
    names: tuple[str, ...],
    fits: Callable[[dict[str, np.ndarray]], bool],
    train: Callable[[], tuple[dict[str, np.ndarray], dict[str, int]]],
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Weights (`prefix` + each of `names`) and counts read from `cache_dir()/folder/key.npz`,
    or, when that file is missing, unreadable or doesn't `fits`, `train()`'s, written there
    atomically (a cache that can't be written is skipped: the caller still has them)."""
    path = cache_dir() / folder / f"{key}.npz"
    with contextlib.suppress(OSError, ValueError, KeyError, zipfile.BadZipFile):
        with np.load(path, allow_pickle=False) as stored:
            weights = {f"{prefix}{name}": stored[name] for name in names}
            counts = {k.removeprefix("count_"): int(stored[k]) for k in stored if "count_" in k}
        if fits(weights):
            return weights, counts
    weights, counts = train()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            np.savez(
                out,
                **{name: weights[f"{prefix}{name}"] for name in names},
                **{f"count_{kind}": np.int64(n) for kind, n in counts.items()},
            )
    return weights, counts


def versions() -> tuple[str, ...]:
    """The versions of what decides a trained network's weights besides its settings."""
    return tuple(_version(package) for package in ("keras", "jax", "jaxlib", "numpy"))


def _verifier_key(
    digits: np.ndarray, labels: np.ndarray, num_classes: int, seed: int, level: bool
) -> str:
    levelled = ("levelled",) if level else ()  # a key of before levelling existed stays valid
    settings = (VERSION, num_classes, seed, *levelled, CELL, BINS, HIDDEN, EPOCHS, BATCH_SIZE,
                MAX_DIGITS, NON_DIGITS_PER_DIGIT, KINDS, SHIFTS)  # fmt: skip
    return weights_key(settings, digits, labels)


def weights_key(settings: tuple, digits: np.ndarray, labels: np.ndarray) -> str:
    """A cache key for weights trained on `digits` and `labels`: a hash of them, of
    `settings` (what else decides the weights) and of the packages' `versions()`."""
    digest = hashlib.sha256(repr((*settings, *versions())).encode())
    digest.update(np.ascontiguousarray(digits, np.uint8).tobytes())
    digest.update(np.ascontiguousarray(labels, np.int64).tobytes())
    return digest.hexdigest()[:32]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return ""
