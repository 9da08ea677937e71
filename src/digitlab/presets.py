"""Named networks, as data: `seed` is the notebook's; the others aim at published accuracies.

A preset is a `Spec` like any spec file would give, so presets take no code path of their own.
"""

from __future__ import annotations

from digitlab.choices import canonical
from digitlab.data import NUM_CLASSES
from digitlab.errors import SpecError
from digitlab.schema import Spec, TrainConfig, unknown


def _dense(units: int, activation: str) -> dict:
    return {"type": "Dense", "units": units, "activation": activation}


def _dropout(rate: float) -> dict:
    return {"type": "Dropout", "rate": rate}


def _conv(filters: int) -> tuple[dict, dict, dict]:
    """A 5×5 convolution, batch-normalised before its relu (so it needs no bias of its own)."""
    return (
        {"type": "Conv2D", "filters": filters, "kernel_size": 5, "use_bias": False},
        {"type": "BatchNormalization"},
        {"type": "Activation", "activation": "relu"},
    )


# Average pooling: on XLA's CPU backend max pooling's gradient costs more than a convolution
# (benchmarks/RESULTS.md, "Convolutions in a compiled loop").
_POOL = {"type": "AveragePooling2D", "pool_size": 2}


def _distort(**settings: float) -> dict:
    """digitlab's RandomDistortion: random affine and elastic maps of the training digits."""
    return {"type": "RandomDistortion", **settings}


def _mlp_body(units: int, rate: float) -> tuple[dict, ...]:
    """Two relu layers of `units`, each followed by dropout at `rate`, then the logits."""
    hidden = (_dense(units, "relu"), _dropout(rate))
    return (*hidden, *hidden, _dense(NUM_CLASSES, "linear"))  # logits: from_logits=True


def _cosine(epochs: int, batch_size: int = 128, learning_rate: float = 1e-3) -> TrainConfig:
    """Adam whose learning rate decays along a cosine to 0 by the last epoch."""
    return TrainConfig(
        batch_size=batch_size,
        epochs=epochs,
        learning_rate=learning_rate,
        learning_rate_schedule="cosine",
    )


# The distortions of the cnn and, for half of the digits, a degradation (noise, blur, stroke
# width, marks, gaps, low resolution): for digits that leave MNIST (issue 22; RESULTS,
# "Degraded digits"). The robust presets start with it.
_DEGRADED = (
    _distort(rotation=10, scale=0.1, shift=2),
    {"type": "RandomDegradation", "probability": 0.5},
)


def _cnn_body() -> tuple[dict, ...]:
    """The cnn preset's layers after its augmentation."""
    return (
        *_conv(32),
        _POOL,
        *_conv(64),
        _POOL,
        _dropout(0.25),
        {"type": "Flatten"},
        _dense(128, "relu"),
        _dropout(0.5),
        _dense(NUM_CLASSES, "linear"),
    )


# The cnn's training, and cnn-robust's: 25 epochs, 8 min here in fastfit's unrolled programs.
_CNN_TRAIN = _cosine(epochs=25)

PRESETS: dict[str, Spec] = {
    "seed": Spec(
        name="seed",
        description="the notebook's MLP: 100 sigmoid, 2x(100 relu + dropout 0.2), 10 sigmoid",
        layers=(
            _dense(100, "sigmoid"),
            _dense(100, "relu"),
            _dropout(0.2),
            _dense(100, "relu"),
            _dropout(0.2),
            _dense(NUM_CLASSES, "sigmoid"),
        ),
        train=TrainConfig(),
    ),
    "fast": Spec(
        name="fast",
        description="small convnet for a laptop CPU: 5x5 conv 16/32 + BN + avg-pool, dense 128",
        input="image",
        layers=(
            *_conv(16),  # 28 → 24
            _POOL,  # → 12
            *_conv(32),  # → 8
            _POOL,  # → 4
            {"type": "Flatten"},
            _dense(128, "relu"),
            _dense(NUM_CLASSES, "linear"),
        ),
        # Larger batches than the cnn's (fewer steps) with a higher, cosine-decayed rate: the
        # choice of bench_time_to_accuracy.py's trials, in benchmarks/RESULTS.md.
        train=_cosine(epochs=5, batch_size=256, learning_rate=4e-3),
    ),
    "mlp": Spec(
        name="mlp",
        description="MLP without augmentation: 2x(1024 relu + dropout 0.3), cosine-decayed Adam",
        layers=_mlp_body(1024, 0.3),
        train=_cosine(epochs=15),
    ),
    "mlp-aug": Spec(
        name="mlp-aug",
        description="MLP on distorted digits (random affine + elastic): 2x(1024 relu + dropout .2)",
        input="image",  # the distortions work on 28×28 images; Flatten follows them
        layers=(
            _distort(rotation=10, scale=0.1, shift=2, elastic_alpha=34, elastic_sigma=4),
            {"type": "Flatten"},
            *_mlp_body(1024, 0.2),
        ),
        train=_cosine(epochs=200),
    ),
    # An MLP on degraded digits: the robust network that trains in two minutes (issue 22;
    # RESULTS, "The verdict under shift": a robust second network).
    "mlp-robust": Spec(
        name="mlp-robust",
        description="MLP on distorted digits, half degraded: 2x(512 relu + dropout .2), 20 epochs",
        input="image",
        layers=(*_DEGRADED, {"type": "Flatten"}, *_mlp_body(512, 0.2)),
        train=_cosine(epochs=20),
    ),
    "cnn": Spec(
        name="cnn",
        description="small convnet on distorted digits: 5x5 conv 32/64 + BN + avg-pool, dense 128",
        input="image",
        layers=(_distort(rotation=10, scale=0.1, shift=2), *_cnn_body()),
        train=_CNN_TRAIN,
    ),
    "cnn-robust": Spec(
        name="cnn-robust",
        description="the cnn, on distorted digits of which half are degraded (noise, blur, ...)",
        input="image",
        layers=(*_DEGRADED, *_cnn_body()),
        train=_CNN_TRAIN,
    ),
}


def preset_names() -> tuple[str, ...]:
    """The names `--preset` accepts."""
    return tuple(PRESETS)


def get_preset(name: str) -> Spec:
    """The preset called `name`.

    Raises:
        SpecError: no preset has that name; the message lists the valid ones.
    """
    try:
        return PRESETS[canonical(name, PRESETS)]  # "CNN" is cnn
    except KeyError:
        raise SpecError(unknown("preset", name, PRESETS)) from None
