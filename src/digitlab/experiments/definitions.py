"""The three built-in experiments, as data: the notebook's three linked notes.

Each is a `Definition` like a user's TOML file gives: a question, its primary claims (each
from its literature anchor, with the smallest effect that matters), a budget measured to
finish within 10 minutes on 2 CPU cores, and variants written as the notebook's network with
overrides, each changing one thing. Every default budget trains on the first 6,000 digits,
1,000 of them held out for validation: 5,000 to fit, few enough that a network can memorise
them. Learning-rate grids are half-decade steps around the best rate of a pilot run; a rate
chosen at a grid's edge would say the grid is too narrow, and the conclusion says which
rate each variant got.
"""

from __future__ import annotations

from pathlib import Path

from digitlab.data import NUM_CLASSES
from digitlab.errors import SpecError
from digitlab.experiments.schema import Budget, Definition, Variant
from digitlab.experiments.sizes import DROPOUT_SIZE
from digitlab.schema import did_you_mean, unknown, validate

NOTEBOOK = ("sigmoid", "relu", "relu")  # the notebook's hidden activations, 100 units each
# The wide network: the notebook's layers at 512 units (9× the weights). At 1,024 units,
# dropout 0.5 left a pilot run at chance (seed 0, 20 epochs of Adam), and each run cost 3×
# as much as at 512, which memorises 5,000 digits as well (training loss 0.008).
WIDE = 512
BUDGET = {"epochs": 20, "train_samples": 6000, "validation_split": 1 / 6}


def _dense(units: int, activation: str) -> dict:
    return {"type": "Dense", "units": units, "activation": activation}


def _notebook(
    hidden: tuple[str, str, str] = NOTEBOOK, rate: float = 0.2, units: int = 100
) -> list[dict]:
    """The notebook's layers: 100 sigmoid, 100 relu, dropout, 100 relu, dropout, 10 sigmoid;
    `hidden`, the dropout `rate` (0: none) and the hidden `units` changed as given."""
    layers = [_dense(units, hidden[0]), _dense(units, hidden[1])]
    if rate:
        layers.append({"type": "Dropout", "rate": rate})
    layers.append(_dense(units, hidden[2]))
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


def _sgd(**train) -> dict:
    """Plain SGD (no momentum), as in the papers the claims come from."""
    return {"optimizer": "sgd", **train}


def _cosine(**train) -> dict:
    """Plain SGD with its rate decayed to 0 along a cosine over the run."""
    return _sgd(learning_rate_schedule="cosine", **train)


DROPOUT = {
    "name": "dropout",
    "question": "Does dropout reduce overfitting, and does it help more where a network can "
    "memorise its training digits?",
    "description": "The notebook's network (Adam at its default rate, batch 32) with dropout "
    "0, 0.2 (the notebook's) and 0.5, and a wide copy of it: the same layers at 512 units "
    "instead of 100, only the width changed, with dropout 0 and 0.5. The wide network can "
    "memorise the digits it trains on; the question is whether dropout's gain in test "
    "accuracy is larger there (an interaction: the difference of the two differences).",
    "anchor": "Srivastava et al. 2014, §6.1 and Table 2: on MNIST a 2×800 net had 1.60% test "
    "error, 1.25% with dropout (ReLU); §7.2: dropout narrows the gap between training and "
    "test error. Expected direction: dropout narrows the generalisation gap, and raises the "
    "test accuracy most for the network that can memorise.",
    "baseline": "notebook-0",
    "comparisons": [
        ["notebook-0.2", "notebook-0"],
        ["notebook-0.5", "notebook-0"],
        ["wide-0.5", "wide-0"],
        ["wide-0", "notebook-0"],
    ],
    "claims": [
        {
            "name": "gap",
            "statement": "Dropout 0.5 narrows the notebook network's gap between validation "
            "and training loss (both measured with dropout off).",
            "anchor": "Srivastava et al. 2014, §7.2",
            "metric": "generalization_gap",
            "variants": ["notebook-0.5", "notebook-0"],
            "expect": "lower",
            "effect": 0.02,
        },
        {
            "name": "wide-accuracy",
            "statement": "Dropout 0.5 raises the wide network's test accuracy.",
            "anchor": "Srivastava et al. 2014, Table 2: 1.60% → 1.25% test error (0.35 points)",
            "metric": "test_accuracy",
            "variants": ["wide-0.5", "wide-0"],
            "expect": "higher",
            "effect": 0.0035,
        },
        {
            "name": "interaction",
            "statement": "Dropout 0.5 raises the wide network's test accuracy more than the "
            "notebook network's: it helps most where a network can memorise.",
            "anchor": "Srivastava et al. 2014, §6.1, Fig. 9",
            "metric": "test_accuracy",
            "variants": ["wide-0.5", "wide-0", "notebook-0.5", "notebook-0"],
            "expect": "higher",
            "effect": 0.0035,
        },
    ],
    "budget": {**BUDGET, "epochs": 15, "seeds": 10},
    "plots": ["loss", "gap", "accuracy", "forest"],
    "variants": [
        {"name": "notebook-0", "description": "no dropout", "layers": _notebook(rate=0)},
        {
            "name": "notebook-0.2",
            "description": "the notebook's network, dropout 0.2",
            "layers": _notebook(rate=0.2),
        },
        {"name": "notebook-0.5", "description": "dropout 0.5", "layers": _notebook(rate=0.5)},
        {
            "name": "wide-0",
            "description": f"{WIDE} units per hidden layer, no dropout",
            "layers": _notebook(rate=0, units=WIDE),
        },
        {
            "name": "wide-0.5",
            "description": f"{WIDE} units per hidden layer, dropout 0.5",
            "layers": _notebook(rate=0.5, units=WIDE),
        },
    ],
}

# Batch sizes: each variant's rate grid is centred on a pilot's best, and every grid holds 0.3
# (the "at one learning rate" view: batch 1 diverges there); a large batch gets a
# warm-up of about 5% of its updates (Goyal et al. 2017) and enough updates to reach the
# target and the matched loss (min_updates: 1.5× the ~200 that 5 seeds needed at rate 1).
_BATCHES = (
    # name, batch (None: full), grid, warm-up epochs, min_updates, description
    ("batch-1", 1, (0.01, 0.03, 0.1, 0.3), 0, None, "pure SGD: one update per digit"),
    ("batch-32", 32, (0.1, 0.3, 1.0), 0, None, "mini-batches of 32 (the notebook's)"),
    ("batch-128", 128, (0.3, 1.0, 3.0), 0, None, "mini-batches of 128"),
    ("batch-1024", 1024, (0.3, 1.0, 3.0), 5, 300, "mini-batches of 1,024"),
    (
        "full-batch",
        None,
        (0.3, 1.0, 3.0),
        15,
        300,
        "gradient descent: one update per epoch, over every digit it trains on",
    ),
)

BATCH_SIZE = {
    "name": "batch-size",
    "question": "Gradient descent or stochastic gradient descent: what does a larger batch "
    "buy, counted in updates, in digits seen, in epochs and in seconds?",
    "description": "The notebook's network without dropout (so that full-batch training is "
    "true gradient descent), trained by plain SGD with batches of 1, 32, 128 and 1,024 "
    "digits, and the full batch. Every batch size runs at its own best learning rate, "
    "chosen on the validation digits from a small log grid (one run per rate, a seed not "
    "among the compared ones); the large batches warm up (the rate ramps from 0) and train "
    "for at least 300 updates, so that they can reach the target. The headline: updates "
    "and digits to reach 90% validation accuracy, against the batch size. Times to the "
    "target are read at the end of each epoch, so a small batch's figure is rounded up to "
    "a whole epoch. The grid runs at 0.3, a rate in every grid, are the 'at one "
    "learning rate' view.",
    "anchor": "Shallue et al. 2019, Fig. 1, and McCandlish et al. 2018: up to a critical "
    "batch size, doubling the batch halves the updates to a target; beyond it the updates "
    "stop falling and the digits seen grow. LeCun et al. 1998, Efficient BackProp §4.1: "
    "per pass over redundant data such as MNIST, small batches learn more. Keskar et al. "
    "2017: large batches generalise worse, compared at equal training loss.",
    "baseline": "batch-32",
    # fewer tests, more power for the claims (Holm and the intervals count every test)
    "comparisons": [
        ["batch-1", "batch-32"],
        ["batch-1024", "batch-32"],
        ["full-batch", "batch-32"],
    ],
    "learning_rate_policy": "tuned",
    "reference_batch": 32,
    "target": 0.9,
    "matched_loss": 0.3,
    "claims": [
        {
            "name": "updates",
            "statement": "Four times the batch (32 → 128) takes fewer updates to reach 90% "
            "validation accuracy.",
            "anchor": "Shallue et al. 2019, Fig. 1",
            "metric": "updates_to_target",
            "variants": ["batch-128", "batch-32"],
            "expect": "lower",
            "effect": 50,
        },
        {
            "name": "digits",
            "statement": "Beyond the critical batch size, a larger batch costs more digits "
            "to reach the target: the full batch needs more than batches of 1,024.",
            "anchor": "McCandlish et al. 2018, §2.2",
            "metric": "examples_to_target",
            "variants": ["full-batch", "batch-1024"],
            "expect": "higher",
            "effect": 25000,
        },
        {
            "name": "epochs",
            "statement": "Per pass over the digits, small batches learn more: batches of 32 "
            "reach the target in fewer epochs than batches of 1,024.",
            "anchor": "LeCun et al. 1998, §4.1",
            "metric": "epochs_to_target",
            "variants": ["batch-32", "batch-1024"],
            "expect": "lower",
            "effect": 1,
        },
        {
            "name": "sharpness",
            "statement": "At equal training loss (0.3), batches of 1,024 have a larger gap "
            "between validation and training loss than batches of 32.",
            "anchor": "Keskar et al. 2017",
            "metric": "gap_at_matched_loss",
            "variants": ["batch-1024", "batch-32"],
            "expect": "higher",
            "effect": 0.02,
        },
        {
            # the effect: a quarter of batch-32's λ_max, about 6.5 in a pilot run (seed 0)
            "name": "sharp-minimum",
            "statement": "At equal training loss (0.3), batches of 1,024 sit in a sharper "
            "minimum than batches of 32: a larger top eigenvalue of the training loss's "
            "Hessian.",
            "anchor": "Keskar et al. 2017",
            "metric": "sharpness_at_matched_loss",
            "variants": ["batch-1024", "batch-32"],
            "expect": "higher",
            "effect": 1.5,
        },
    ],
    "budget": {**BUDGET, "seeds": 6},
    # --quick: enough digits (1,041 each epoch) for a whole batch of 1024
    "quick": {"epochs": 1, "train_samples": 1250, "validation_split": 1 / 6, "seeds": 1},
    "plots": [
        "to-target",
        "loss",
        "updates",
        "seconds",
        "accuracy",
        "learning-rates",
        "sharpness",
        "forest",
    ],
    "variants": [
        {
            "name": name,
            "description": description,
            "layers": _notebook(rate=0),
            **({"full_batch": True} if batch is None else {}),
            "train": _sgd(
                learning_rate=0.3,  # the one rate of --lr-policy same, and --quick's
                **({"batch_size": batch} if batch is not None else {}),
                **({"warmup_epochs": warmup} if warmup else {}),
            ),
            "learning_rates": grid,
            **({"min_updates": updates} if updates else {}),
        }
        for name, batch, grid, warmup, updates, description in _BATCHES
    ],
}

# Input scalings crossed with the optimizer (SGD at a tuned rate, Adam at the notebook's), batch
# norm against its plain network each at its best SGD rate, and scaling × activation.
_SCALINGS = {
    "unit": ("pixels /255 (the notebook's)", (0.1, 0.3, 1.0, 3.0)),
    "raw": ("raw pixels 0–255", (0.001, 0.003, 0.01, 0.03)),
    "std": ("each pixel standardised (zero mean, unit variance)", (0.03, 0.1, 0.3, 1.0)),
}
_INPUT = {"unit": "unit", "raw": "raw", "std": "standardize"}

NORMALIZATION = {
    "name": "normalization",
    "question": "Why scale the pixels? Input scaling under plain SGD and under Adam, batch "
    "normalisation at its best learning rate, and whether raw pixels hurt a sigmoid network "
    "more than a relu one.",
    "description": "Three crosses, each changing one thing at a time. (1) The notebook's "
    "network fed raw 0–255 pixels, pixels /255 (the notebook's) and per-pixel standardised "
    "ones (each pixel centred and divided by its deviation over the training digits), each "
    "trained by plain SGD at its best rate from a grid (decayed to 0 along a cosine, so "
    "that each run ends settled rather than mid-oscillation: a pilot's final accuracies "
    "spread ±2 points across seeds at a constant rate, ±0.3 with the decay), and by Adam at "
    "the notebook's constant default. (2) Ioffe & Szegedy's 3×100 sigmoid network with and "
    "without BatchNormalization before each sigmoid, each at its best SGD rate from one "
    "grid reaching 10, a rate batch normalisation is said to tolerate. (3) "
    "All three hidden layers sigmoid, or all relu, fed raw or /255 pixels, by Adam. For each "
    "hidden layer, on a fixed batch of 500 validation digits after every epoch: the 15th, "
    "50th and 85th percentiles of the pre-activations, the fraction of saturated "
    "sigmoid/tanh units (output within 0.01 of a bound) and of dead relus (zero on every "
    "digit of the batch).",
    "anchor": "LeCun et al. 1998, Efficient BackProp §4.3: inputs of zero mean and equal "
    "variance make SGD converge faster. Kingma & Ba 2015: Adam's per-parameter step is "
    "invariant to the scale of the gradient. Ioffe & Szegedy 2015: batch normalisation "
    "trains faster and tolerates higher rates. Glorot & Bengio 2010: sigmoid layers "
    "saturate.",
    "baseline": "unit-adam",
    "comparisons": [
        ["raw-sgd", "unit-sgd"],
        ["std-sgd", "unit-sgd"],
        ["raw-adam", "unit-adam"],
        ["std-adam", "unit-adam"],
        ["bn-sgd", "sigmoid-sgd"],
        ["sigmoid-raw", "sigmoid-unit"],
        ["relu-raw", "relu-unit"],
    ],
    "claims": [
        {
            "name": "standardised-sgd",
            "statement": "Under plain SGD, each at its best rate, standardised pixels reach a "
            "lower training loss in the same epochs than pixels /255.",
            "anchor": "LeCun et al. 1998, §4.3",
            "metric": "final_train_loss",
            "variants": ["std-sgd", "unit-sgd"],
            "expect": "lower",
            "effect": 0.02,
        },
        {
            "name": "adam-absorbs-scale",
            "statement": "Under Adam, standardised pixels and pixels /255 give the same test "
            "accuracy: its per-parameter step absorbs the input's scale.",
            "anchor": "Kingma & Ba 2015, §2.1",
            "metric": "test_accuracy",
            "variants": ["std-adam", "unit-adam"],
            "expect": "equivalent",
            "effect": 0.005,
        },
        {
            "name": "batch-norm",
            "statement": "Each at its best SGD rate, the batch-normalised network has a higher "
            "test accuracy than the plain one.",
            "anchor": "Ioffe & Szegedy 2015, Fig. 1",
            "metric": "test_accuracy",
            "variants": ["bn-sgd", "sigmoid-sgd"],
            "expect": "higher",
            "effect": 0.005,
        },
        {
            "name": "raw-hurts-sigmoid",
            "statement": "Raw pixels cost a sigmoid network more test accuracy than a relu "
            "one: saturated sigmoids stop learning.",
            "anchor": "Glorot & Bengio 2010; LeCun et al. 1998, §4.3",
            "metric": "test_accuracy",
            "variants": ["sigmoid-unit", "sigmoid-raw", "relu-unit", "relu-raw"],
            "expect": "higher",
            "effect": 0.005,
        },
    ],
    "budget": {**BUDGET, "epochs": 15, "seeds": 5},
    "plots": ["loss", "accuracy", "activations", "learning-rates", "forest"],
    "activation_stats": True,
    "variants": [
        *(
            {
                "name": f"{scaling}-sgd",
                "description": f"{text}, SGD",
                "input_scaling": _INPUT[scaling],
                "train": _cosine(learning_rate=grid[len(grid) // 2]),
                "learning_rates": grid,
            }
            for scaling, (text, grid) in _SCALINGS.items()
        ),
        *(
            {
                "name": f"{scaling}-adam",
                "description": f"{text}, Adam",
                "input_scaling": _INPUT[scaling],
            }
            for scaling, (text, _grid) in _SCALINGS.items()
        ),
        {
            "name": "sigmoid-sgd",
            "description": "3×100 sigmoid, SGD",
            "layers": _notebook(("sigmoid",) * 3, rate=0),
            "train": _cosine(learning_rate=1.0),
            "learning_rates": (0.3, 1.0, 3.0, 10.0),
        },
        {
            "name": "bn-sgd",
            "description": "3×100 sigmoid, BatchNormalization before each sigmoid, SGD",
            "layers": _batch_normalized(),
            "train": _cosine(learning_rate=1.0),
            "learning_rates": (0.3, 1.0, 3.0, 10.0),
        },
        *(
            {
                "name": f"{activation}-{scaling}",
                "description": f"{activation} in all three hidden layers, {_SCALINGS[scaling][0]}",
                "input_scaling": scaling,
                "layers": _notebook((activation,) * 3),
            }
            for activation in ("sigmoid", "relu")
            for scaling in ("unit", "raw")
        ),
    ],
}

# Issue 21: the mechanism each built-in measures on its network before the runs, and predicts
# the outcome from (`experiments.predictions`): the gradient's noise scale (batch size), the
# loss's curvature, the inputs' conditioning and the sigmoid's saturation at initialisation
# (normalization), the generalisation gap of a short run without dropout (dropout), and of
# short runs at each training-set size (dropout-size).
MECHANISMS = {
    "batch-size": "noise-scale",
    "normalization": "curvature",
    "dropout": "short-run-gap",
    "dropout-size": "size-gap",
}

BUILT_IN: dict[str, Definition] = {
    data["name"]: validate(Definition, data, f"experiment {data['name']}")
    for data in (DROPOUT, BATCH_SIZE, NORMALIZATION, DROPOUT_SIZE)
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


def canonical_name(name_or_path: str | Path) -> str:
    """A built-in's name in any case ('Dropout', 'BATCH-SIZE') as it is spelt, unless a
    file of that name exists; anything else as given."""
    text = str(name_or_path)
    if text.lower() in BUILT_IN and not Path(text).exists():
        return text.lower()
    return text


def load_definition(name_or_path: str | Path) -> Definition:
    """A built-in experiment by name, or a user's TOML file (`*.toml`, or any existing file).

    A TOML file holds the same keys as a built-in: `name`, `question`, `[budget]`, and
    `[[variants]]` tables with `name`, `preset`, `layers`, a `train` table of overrides,
    `input_scaling`, `full_batch`, `learning_rates`, `min_updates` and `train_digits`.

    Raises:
        SpecError: no such experiment, or the file is unreadable or has an unknown key or a
            bad value (one line).
    """
    from digitlab.config import read_toml

    text = canonical_name(name_or_path)
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
