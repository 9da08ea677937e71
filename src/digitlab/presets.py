"""Named networks, as data: `seed` is the notebook's; the others aim at published accuracies.

A preset is a `Spec` like any spec file would give, so presets take no code path of their own.
"""

from __future__ import annotations

from digitlab.config import Spec, TrainConfig
from digitlab.errors import SpecError


def _dense(units: int, activation: str) -> dict:
    return {"type": "Dense", "units": units, "activation": activation}


def _dropout(rate: float) -> dict:
    return {"type": "Dropout", "rate": rate}


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
            _dense(10, "sigmoid"),
        ),
        train=TrainConfig(),
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
        return PRESETS[name]
    except KeyError:
        raise SpecError(f"unknown preset '{name}'; valid presets: {', '.join(PRESETS)}") from None
