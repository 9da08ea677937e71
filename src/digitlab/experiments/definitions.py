"""The three built-in experiments, as data: the notebook's three linked notes.

Each is a `Definition` like a user's TOML file gives: a question, a budget chosen so that the
effect shows within about five minutes on 2 CPU cores, and variants written as presets with
overrides. The notebook's network is the `seed` preset.
"""

from __future__ import annotations

from pathlib import Path

from digitlab.data import NUM_CLASSES
from digitlab.errors import SpecError
from digitlab.experiments.schema import Budget, Definition, Variant
from digitlab.schema import did_you_mean, unknown, validate


def _dense(units: int, activation: str) -> dict:
    return {"type": "Dense", "units": units, "activation": activation}


def _notebook(hidden: tuple[str, str, str] = ("sigmoid", "relu", "relu"), rate: float = 0.2):
    """The notebook's layers: 100 sigmoid, 100 relu, dropout, 100 relu, dropout, 10 sigmoid."""
    layers = [_dense(100, hidden[0]), _dense(100, hidden[1])]
    if rate:
        layers.append({"type": "Dropout", "rate": rate})
    layers.append(_dense(100, hidden[2]))
    if rate:
        layers.append({"type": "Dropout", "rate": rate})
    return [*layers, _dense(NUM_CLASSES, "sigmoid")]


def _wide(rate: float) -> list[dict]:
    layers = []
    for _ in range(2):
        layers.append(_dense(1024, "relu"))
        if rate:
            layers.append({"type": "Dropout", "rate": rate})
    return [*layers, _dense(NUM_CLASSES, "sigmoid")]


def _batch_normalized(activation: str = "sigmoid") -> list[dict]:
    """Ioffe & Szegedy's MNIST net: 3×100 sigmoid, each Dense normalised before its sigmoid."""
    layers: list[dict] = []
    for _ in range(3):
        layers += [
            {"type": "Dense", "units": 100, "use_bias": False},  # BN's beta is the bias
            {"type": "BatchNormalization"},
            {"type": "Activation", "activation": activation},
        ]
    return [*layers, _dense(NUM_CLASSES, "sigmoid")]


DROPOUT = {
    "name": "dropout",
    "question": "Does dropout reduce overfitting, and does it help more where a network can "
    "memorise its training digits?",
    "description": "The notebook's network with dropout 0, 0.2 (the notebook's) and 0.5, and a "
    "wide 2×1024 relu network with and without dropout 0.5, on 5,000 training digits: few "
    "enough that the networks can memorise them.",
    "anchor": "Srivastava et al. 2014, Table 2: on MNIST a 2×800 net had 1.60% test error; "
    "with dropout 1.25% (ReLU) and 1.05% (with max-norm). Expected direction: dropout lowers "
    "the generalisation gap and the test error, most for the wide network.",
    "baseline": "notebook-0",
    "comparisons": [
        ["notebook-0.2", "notebook-0"],
        ["notebook-0.5", "notebook-0"],
        ["wide-0.5", "wide-0"],
        ["wide-0", "notebook-0"],
    ],
    "budget": {"epochs": 20, "train_samples": 6000, "validation_split": 1 / 6, "seeds": 3},
    "plots": ["loss", "gap", "accuracy"],
    "variants": [
        {"name": "notebook-0", "description": "no dropout", "layers": _notebook(rate=0)},
        {"name": "notebook-0.2", "description": "the notebook's dropout 0.2"},
        {"name": "notebook-0.5", "description": "dropout 0.5", "layers": _notebook(rate=0.5)},
        {"name": "wide-0", "description": "2×1024 relu, no dropout", "layers": _wide(0)},
        {"name": "wide-0.5", "description": "2×1024 relu, dropout 0.5", "layers": _wide(0.5)},
    ],
}

BATCH_SIZE = {
    "name": "batch-size",
    "question": "Gradient descent or stochastic gradient descent: what does one update per "
    "pass over the data, per mini-batch, or per digit buy, per epoch, per update and per "
    "second?",
    "description": "The notebook's network trained by plain SGD (no momentum) at one learning "
    "rate, 0.01, for every batch size: full-batch gradient descent (one update per epoch), "
    "mini-batches of 1024, 128 and 32 (the notebook's), and pure SGD (batch 1). The same rate "
    "is the default because it makes every update the same size of step along the mean "
    "gradient: the curves per update then compare what an update is worth, and the curves per "
    "epoch what more updates per pass buy. The rate is one pure SGD trains stably with: at "
    "0.1, batch 1 reached 47.9% ± 33.8% test accuracy over 3 seeds (batch 32: 92.4%). "
    "--lr-policy linear instead scales the rate with the batch size from 0.01 at "
    "batch 32 (Goyal et al. 2017), which equalises the distance moved per epoch.",
    "anchor": "LeCun et al. 1998, Efficient BackProp §4.1: stochastic learning is usually much "
    "faster than batch learning on redundant data such as MNIST; Keskar et al. 2017: large "
    "batches generalise worse. Expected direction: per epoch small batches win; per update "
    "large batches are at least as good; test accuracy is lower for the largest batches.",
    "baseline": "batch-32",
    "budget": {"epochs": 20, "train_samples": 6000, "validation_split": 1 / 6, "seeds": 3},
    # --quick: enough digits (1,041 each epoch) for a whole batch of 1024
    "quick": {"epochs": 1, "train_samples": 1250, "validation_split": 1 / 6, "seeds": 1},
    "learning_rate_policy": "same",
    "reference_batch": 32,
    "plots": ["loss", "updates", "seconds", "accuracy"],
    "variants": [
        {
            "name": "full-batch",
            "description": "gradient descent: one update per epoch over all 5,000 digits",
            "full_batch": True,
            "train": {"optimizer": "sgd", "learning_rate": 0.01},
        },
        *(
            {
                "name": f"batch-{size}",
                "description": f"mini-batches of {size}" + " (the notebook's)" * (size == 32),
                "train": {"optimizer": "sgd", "learning_rate": 0.01, "batch_size": size},
            }
            for size in (1024, 128, 32)
        ),
        {
            "name": "batch-1",
            "description": "pure SGD: one update per digit",
            "train": {"optimizer": "sgd", "learning_rate": 0.01, "batch_size": 1},
        },
    ],
}

NORMALIZATION = {
    "name": "normalization",
    "question": "Why scale the pixels before a sigmoid layer? Input scaling, batch "
    "normalisation and the hidden activation, and what each does to the layers' activations.",
    "description": "The notebook's network (first layer sigmoid) fed raw 0–255 pixels, pixels "
    "/255 (the notebook's) and standardised pixels (zero mean, unit variance over the training "
    "digits, one mean and one deviation for all pixels); the notebook's network with "
    "BatchNormalization after each hidden Dense layer (3×100 sigmoid, as Ioffe & Szegedy); and "
    "sigmoid, tanh and relu in all three hidden layers. For each hidden layer, on a fixed batch "
    "of 500 validation digits after every epoch: the 15th, 50th and 85th percentiles of the "
    "pre-activations, the fraction of saturated sigmoid/tanh units (output within 0.01 of a "
    "bound) and of dead relus (zero on every digit of the batch).",
    "anchor": "Glorot & Bengio 2010, Fig. 2: the top sigmoid layer saturates; Ioffe & Szegedy "
    "2015, Fig. 1: batch normalisation keeps the distribution of a sigmoid layer's inputs "
    "stable and trains faster. Expected direction: raw pixels saturate the first sigmoid layer "
    "and train worse than /255; batch normalisation does no worse than the notebook's network.",
    "baseline": "scale-unit",
    "comparisons": [
        ["scale-raw", "scale-unit"],
        ["scale-standardize", "scale-unit"],
        ["all-sigmoid", "scale-unit"],
        ["batchnorm", "all-sigmoid"],  # Ioffe & Szegedy: 3×100 sigmoid with and without BN
        ["all-tanh", "all-sigmoid"],
        ["all-relu", "all-sigmoid"],
    ],
    "budget": {"epochs": 15, "train_samples": 10000, "validation_split": 0.2, "seeds": 3},
    "plots": ["loss", "accuracy", "activations"],
    "activation_stats": True,
    "variants": [
        {"name": "scale-unit", "description": "pixels /255, the notebook's"},
        {"name": "scale-raw", "description": "raw pixels 0–255", "input_scaling": "raw"},
        {
            "name": "scale-standardize",
            "description": "standardised pixels (zero mean, unit variance)",
            "input_scaling": "standardize",
        },
        {
            "name": "batchnorm",
            "description": "3×100 sigmoid, BatchNormalization before each sigmoid",
            "layers": _batch_normalized(),
        },
        *(
            {
                "name": f"all-{activation}",
                "description": f"{activation} in all three hidden layers",
                "layers": _notebook((activation,) * 3),
            }
            for activation in ("sigmoid", "tanh", "relu")
        ),
    ],
}

BUILT_IN: dict[str, Definition] = {
    data["name"]: validate(Definition, data, f"experiment {data['name']}")
    for data in (DROPOUT, BATCH_SIZE, NORMALIZATION)
}


def experiment_names() -> tuple[str, ...]:
    return tuple(BUILT_IN)


def _refuse_unknown_keys(data: dict, where: str) -> None:
    """An unknown key first, before what it may have left missing (a misspelt `question`
    is "unknown key 'qestion' (did you mean 'question'?)", not "'question' is missing")."""
    tables: list[tuple[str, object, type]] = [("", data, Definition)]
    tables += [(key, data.get(key), Budget) for key in ("budget", "quick")]
    variants = data.get("variants")
    if isinstance(variants, list):
        tables += [("variants", v, Variant) for v in variants]
    for table, values, model in tables:
        if not isinstance(values, dict):
            continue
        valid = sorted(model.model_fields)
        for key in values:
            if key not in valid:
                inside = f" in [{table}]" if table else ""
                raise SpecError(
                    f"{where}: unknown key '{key}'{inside}{did_you_mean(key, valid)}; "
                    f"valid keys: {', '.join(valid)}"
                )


def load_definition(name_or_path: str | Path) -> Definition:
    """A built-in experiment by name, or a user's TOML file (`*.toml`, or any existing file).

    A TOML file holds the same keys as a built-in: `name`, `question`, `[budget]`, and
    `[[variants]]` tables with `name`, `preset`, `layers`, a `train` table of overrides,
    `input_scaling` and `full_batch`.

    Raises:
        SpecError: no such experiment, or the file is unreadable or has an unknown key or a
            bad value (one line).
    """
    from digitlab.config import read_toml

    text = str(name_or_path)
    if text in BUILT_IN:
        return BUILT_IN[text]
    path = Path(text)
    if text.endswith(".toml") or path.is_file():
        data = read_toml(path, "experiment file")
        data.setdefault("name", path.stem)
        _refuse_unknown_keys(data, f"experiment file {path}")
        return validate(Definition, data, f"experiment file {path}")
    raise SpecError(
        unknown("experiment", text, experiment_names())
        + "; or pass a TOML file (see `digitlab experiment --help`)"
    )
