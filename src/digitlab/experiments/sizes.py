"""The built-in training-set-size sweep: where does dropout help? (issue 21, §3)

Srivastava et al. 2014, §7.4 and Fig. 10, trained the same network with and without dropout
on 100 to 50,000 MNIST digits: on the smallest sets dropout gave no improvement, and its gain
grew with the data up to a point, then shrank. This experiment asks the same of the
notebook's network on 500 to 20,000 digits, each size with and without dropout 0.5.

Every run takes the same number of weight updates (`UPDATES`), so a small set is seen for
many epochs (500 digits: 188 of them) and a large one for few (20,000: 5): each size is
trained about as long, and each can memorise what it has. Each size validates on the
`VALIDATION` digits that follow its own (`Variant.train_digits`); every run is tested on the
same 10,000 test digits.
"""

from __future__ import annotations

from digitlab.data import NUM_CLASSES

SIZES = (500, 2_000, 5_000, 20_000)
RATES = (0.0, 0.5)
VALIDATION = 1_000
UPDATES = 3_000  # weight updates of every run: batch 32, so 96,000 digits seen
SMALL, MIDDLE = SIZES[0], SIZES[2]  # the claim's two sizes


def variant_name(size: int, rate: float) -> str:
    """`n500-0`, `n500-0.5`, …: the training digits, then the dropout rate."""
    return f"n{size}-{rate:g}"


def _layers(rate: float) -> list[dict]:
    """The notebook's network with dropout `rate` after each relu layer (0: none)."""
    dense = lambda units, activation: {"type": "Dense", "units": units, "activation": activation}  # noqa: E731
    dropout = [{"type": "Dropout", "rate": rate}] if rate else []
    return [
        dense(100, "sigmoid"),
        dense(100, "relu"),
        *dropout,
        dense(100, "relu"),
        *dropout,
        dense(NUM_CLASSES, "sigmoid"),
    ]


DROPOUT_SIZE = {
    "name": "dropout-size",
    "question": "Where does dropout help: on how many training digits does it raise the test "
    "accuracy most, and where not at all?",
    "description": "The notebook's network (Adam at its default rate, batch 32) without dropout "
    "and with dropout 0.5 after each relu layer, trained on the first 500, 2,000, 5,000 and "
    f"20,000 MNIST digits. Every run takes {UPDATES:,} weight updates, so each size is "
    "trained about as long and the small ones for many epochs; each size validates on the "
    f"{VALIDATION:,} digits right after its own, and every run is tested on the same 10,000 "
    "test digits. The question is where dropout's gain, with minus without at the same size, "
    "is largest.",
    "anchor": "Srivastava et al. 2014, §7.4 and Fig. 10: on MNIST, dropout gave no improvement "
    "on the smallest training sets (100 and 500 digits); its gain grew with the data up to a "
    "point and then shrank as the set grew large enough that the network could not overfit.",
    "baseline": variant_name(MIDDLE, 0.0),
    "comparisons": [[variant_name(n, 0.5), variant_name(n, 0.0)] for n in SIZES],
    "claims": [
        {
            "name": "gain-grows",
            "statement": f"Dropout 0.5 raises the test accuracy more on {MIDDLE:,} training "
            f"digits than on {SMALL}.",
            "anchor": "Srivastava et al. 2014, §7.4, Fig. 10",
            "metric": "test_accuracy",
            "variants": [
                variant_name(MIDDLE, 0.5),
                variant_name(MIDDLE, 0.0),
                variant_name(SMALL, 0.5),
                variant_name(SMALL, 0.0),
            ],
            "expect": "higher",
            "effect": 0.005,
        },
    ],
    "budget": {
        "epochs": 1,  # raised to UPDATES for every size (min_updates)
        "train_samples": SIZES[-1] + VALIDATION,
        "validation_split": VALIDATION / (SIZES[-1] + VALIDATION),
        "seeds": 5,
    },
    # --quick: one epoch on the smoke budget's digits, every size capped at them
    "quick": {"epochs": 1, "train_samples": 1_250, "validation_split": 1 / 6, "seeds": 1},
    "plots": ["gap", "accuracy", "forest"],
    "variants": [
        {
            "name": variant_name(size, rate),
            "description": f"{size:,} training digits, "
            + (f"dropout {rate:g}" if rate else "no dropout"),
            "layers": _layers(rate),
            "train_digits": size,
            "min_updates": UPDATES,
        }
        for size in SIZES
        for rate in RATES
    ],
}
