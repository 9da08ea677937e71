"""The one lists: every name a spec, a flag or a run file may choose, and the bounds of numbers.

`digitlab.schema` builds its `Literal` choices and its bounds from these (and re-exports them:
`from digitlab.schema import OPTIMIZERS` still works); `model.py` builds optimizers from
`OPTIMIZERS`, the tuner's search space draws from the same lists. A new optimizer, loss or
schedule is one entry here.
"""

from __future__ import annotations

from collections.abc import Iterable

from digitlab.data import dataset_names

# The four losses of the notebook's two paths: integer labels with sparse cross-entropy, or
# one-hot labels with anything else. Keras's short aliases are accepted and normalised.
LOSSES = (
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "mean_squared_error",
    "mean_absolute_error",
)
LOSS_ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error"}
# Optimizer name -> its class in `keras.optimizers` (model.py builds them from this table).
OPTIMIZERS = {
    "adam": "Adam",
    "sgd": "SGD",
    "rmsprop": "RMSprop",
    "adagrad": "Adagrad",
    "adamw": "AdamW",
    "nadam": "Nadam",
}
METRICS = ("accuracy", "precision", "recall")
INPUTS = ("flat", "image")
# "constant" keeps the learning rate fixed, as the notebook does; "cosine" decays it to zero
# over the whole fit along half a cosine (Loshchilov & Hutter 2017,
# https://arxiv.org/abs/1608.03983), which settles the last epochs without a tuned drop.
LEARNING_RATE_SCHEDULES = ("constant", "cosine")
PRUNERS = ("median", "hyperband", "none")
DATASETS = dataset_names()
RUN_STATUSES = ("complete", "interrupted")

MAX_UNITS = 16_384  # per Dense layer: 16,384² float32 weights are already 1 GiB
MAX_FILTERS = 4_096  # per Conv2D layer
MAX_SEED = 2**32  # numpy's and JAX's seeds are 32-bit


def canonical(value: object, valid: Iterable[str]) -> object:
    """The one valid name `value` spells, case aside (`SGD` → `sgd`, `MNIST` → `mnist`), or
    `value` unchanged when it matches none or several (the check that follows refuses it,
    naming what was typed). Flags, spec files and the API all go through this, so a run's
    files hold the canonical name.
    """
    if not isinstance(value, str):
        return value
    matches = [name for name in valid if name.casefold() == value.casefold()]
    return matches[0] if len(matches) == 1 else value


# What RandomDegradation can do to a digit: the ways a digit degrades on its way from a pen to
# a file (a sensor's noise, a lens's blur, a pen's width, a scan's resolution, marks and gaps
# on the page). None is one of MNIST-C's corruptions; benchmarks/RESULTS.md says which of
# those each one resembles.
DEGRADATIONS = ("noise", "specks", "blur", "thicken", "thin", "outline", "strokes", "gap", "coarse")


# The layers a user reaches for on 28×28 digits. Anything else in Keras is one line away.
LAYER_TYPES = (
    "Dense",
    "Dropout",
    "BatchNormalization",
    "LayerNormalization",
    "Flatten",
    "Reshape",
    "Activation",
    "Rescaling",  # x·scale + offset: the experiments' raw and standardised input variants
    "Conv2D",
    "MaxPooling2D",
    "AveragePooling2D",
    "GlobalAveragePooling2D",
    "SpatialDropout2D",
    "GaussianNoise",
    "RandomRotation",
    "RandomTranslation",
    "RandomZoom",
    "RandomDistortion",  # digitlab's: affine + elastic distortions of training digits
    "RandomDegradation",  # digitlab's: noise, blur, stroke width, marks, gaps, low resolution
)
