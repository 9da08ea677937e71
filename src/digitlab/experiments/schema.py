"""The models of an experiment: its definition (built-in or a user's TOML file) and its record.

A definition is data, like a preset: a question, a budget, and variants, each "a preset with
overrides". User-written definitions are `schema._Strict` (unknown keys refused, strict
types), read through `schema.validate`, so a typo is one line, not a traceback.
`experiment.json` is an `ExperimentRecord` (`schema._Record`: keys a newer version adds are
kept).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from digitlab.schema import TrainConfig, _Record, _Strict, register, unknown

# x/255 (the notebook's), 0–255, each pixel to zero mean and unit variance (LeCun et al. 1998)
INPUT_SCALINGS = ("unit", "raw", "standardize")
# tuned: each variant with a grid at its best rate on validation (others at their own);
# same: every variant at its own rate, grids unused; linear: the own rate × batch / reference
# batch (Goyal et al. 2017), grids unused.
LEARNING_RATE_POLICIES = ("tuned", "same", "linear")
PLOTS = (
    "loss",  # training (dropout off) and validation loss per epoch, CI bands
    "gap",  # the generalisation gap per variant
    "accuracy",  # training (dropout off) and validation accuracy curves, test accuracy
    "updates",  # the loss against weight updates
    "seconds",  # the loss against training seconds
    "activations",  # per-layer pre-activation percentiles and saturation
    "to-target",  # steps and examples to the target accuracy against batch size
    "learning-rates",  # each tuned variant's validation accuracy against its rate grid
    "forest",  # every tested difference with its adjusted interval and margin
    "sharpness",  # λ_max and the gap where the training loss reaches matched_loss (Keskar)
)
# What a claim or comparison can be about: a figure `VariantResult` summarises across seeds.
METRICS = (
    "test_accuracy",
    "generalization_gap",  # validation − training loss (dropout off) at the last epoch
    "final_train_loss",
    "final_val_loss",
    "epochs_to_target",  # to the experiment's target validation accuracy
    "updates_to_target",
    "examples_to_target",
    "seconds_to_target",
    "gap_at_matched_loss",  # the gap where the training loss first reaches matched_loss
    # λ_max of the training loss's Hessian there (Keskar et al. 2017's sharpness)
    "sharpness_at_matched_loss",
)
EXPECTATIONS = ("higher", "lower", "equivalent")  # what the literature says: a vs b
VERDICTS = ("higher", "lower", "equivalent", "inconclusive", "not tested")
LITERATURE = ("agrees", "disagrees", "inconclusive", "not tested")
RECORD_STATUSES = ("complete", "interrupted")
# Issue 21: what the mechanism measured before the runs predicted, judged after them on the
# measured intervals (`experiments.predictions`); "pending" until the runs it needs are done.
PREDICTION_VERDICTS = ("held", "missed", "inconclusive", "pending")
# Training fields an experiment's budget sets for every variant: a variant may not change them.
BUDGET_FIELDS = ("epochs", "train_samples", "validation_split", "seed")


class Budget(_Strict):
    """How much training every (variant, seed) gets."""

    epochs: int = Field(ge=1, le=10_000)
    train_samples: int = Field(ge=2, le=60_000)  # the first N training digits, validation included
    validation_split: float = Field(0.2, gt=0.0, lt=1.0)  # every run keeps one for its curves
    seeds: int = Field(3, ge=1, le=100)

    @property
    def fit_samples(self) -> int:
        """The digits each epoch trains on (the split is taken from the end, as in `fit`)."""
        import math

        return math.floor(self.train_samples * (1.0 - self.validation_split))

    @model_validator(mode="after")
    def _leaves_digits(self) -> Budget:
        fit = self.fit_samples
        if not 1 <= fit < self.train_samples:
            raise ValueError(
                f"train_samples = {self.train_samples} with validation_split = "
                f"{self.validation_split:g} leaves {fit} digits to train on and "
                f"{self.train_samples - fit} to validate on; each needs at least one: "
                "raise train_samples or change validation_split"
            )
        return self


class Claim(_Strict):
    """A primary claim an experiment is designed to test, from its literature anchor.

    `variants` is `[a, b]` (a − b) or `[a, b, c, d]`, the interaction (a − b) − (c − d): e.g.
    "dropout helps the wide net more than the narrow one". `effect` is the smallest effect of
    interest in the metric's units (0.0035 is 0.35 accuracy points): the power of the test
    is computed for it, and an equivalence verdict is "within ±effect".
    """

    name: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    statement: str = Field(min_length=1, max_length=500)  # the claim in plain words
    anchor: str = Field("", max_length=500)  # the paper it comes from
    metric: Literal[METRICS] = "test_accuracy"
    variants: tuple[str, ...] = Field(min_length=2, max_length=4, strict=False)
    expect: Literal[EXPECTATIONS]
    effect: float = Field(gt=0)

    @field_validator("variants")
    @classmethod
    def _two_or_four(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) not in (2, 4):
            raise ValueError("variants is [a, b] (a − b) or [a, b, c, d] ((a − b) − (c − d))")
        return value


class Variant(_Strict):
    """One arm of an experiment: a preset, its layers replaced if given, training overrides."""

    name: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = Field("", max_length=500)
    preset: str = "seed"
    layers: tuple[dict[str, Any], ...] | None = Field(None, strict=False, min_length=1)
    train: dict[str, Any] = Field(default_factory=dict)
    input_scaling: Literal[INPUT_SCALINGS] = "unit"
    full_batch: bool = False  # one update per epoch over all the digits it trains on
    # A log grid of learning rates: the experiment first trains one run per rate (seed
    # TUNING_SEED) and keeps the one with the best final validation accuracy for the seeds.
    learning_rates: tuple[float, ...] = Field((), strict=False, max_length=12)
    # Train at least this many weight updates (large batches take few per epoch): the
    # variant's epochs are max(budget epochs, ceil(min_updates / updates per epoch)).
    min_updates: int | None = Field(None, ge=1, le=1_000_000)
    # Train on only the first N of the digits the budget's runs fit (a training-set-size
    # sweep); each run then validates on the budget's count of validation digits right after
    # its own N. None: all of them.
    train_digits: int | None = Field(None, ge=1, le=60_000)

    @field_validator("learning_rates")
    @classmethod
    def _rates(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        for rate in value:
            if not 0 < rate <= 100:  # TrainConfig's learning_rate bounds
                raise ValueError(f"each learning rate must be in (0, 100], got {rate!r}")
        if len(set(value)) != len(value):
            raise ValueError(f"learning_rates repeats a rate: {list(value)}")
        return tuple(sorted(value))

    @field_validator("train")
    @classmethod
    def _train_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key not in TrainConfig.model_fields:
                raise ValueError(unknown("training option", key, TrainConfig.model_fields))
            if key in BUDGET_FIELDS:
                raise ValueError(
                    f"'{key}' is set by the experiment's budget for every variant; "
                    "set it under [budget] (or with --epochs, --train-samples, --seeds)"
                )
        return value

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        from digitlab.presets import preset_names

        if value not in preset_names():
            raise ValueError(unknown("preset", value, preset_names()))
        return value

    @property
    def dataset(self) -> str:
        """The dataset the variant trains on: its own `train.dataset`, else its preset's."""
        from digitlab.presets import get_preset

        return str(self.train.get("dataset") or get_preset(self.preset).train.dataset)

    @model_validator(mode="after")
    def _fits_together(self) -> Variant:
        if self.full_batch and "batch_size" in self.train:
            raise ValueError(
                f"variant '{self.name}': full_batch sets the batch size; leave out batch_size"
            )
        return self


class Definition(_Strict):
    """An experiment: the question, the variants to compare, the budget, what to plot."""

    name: str = Field(min_length=1, max_length=60, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    question: str = Field(min_length=1, max_length=1_000)
    description: str = Field("", max_length=2_000)
    anchor: str = Field("", max_length=2_000)  # the literature the result is compared with
    baseline: str | None = None  # the variant the others are compared with (default: first)
    budget: Budget
    quick: Budget = Budget(epochs=1, train_samples=600, validation_split=0.2, seeds=1)
    learning_rate_policy: Literal[LEARNING_RATE_POLICIES] = "tuned"
    reference_batch: int = Field(32, ge=1)  # the batch size the base learning rate is for
    plots: tuple[Literal[PLOTS], ...] = Field(("loss", "gap", "accuracy"), strict=False)
    activation_stats: bool = False  # per-layer statistics of a fixed validation batch
    # [variant, reference] pairs the conclusion tests (default: every variant vs the baseline)
    comparisons: tuple[tuple[str, str], ...] = Field((), strict=False)
    variants: tuple[Variant, ...] = Field(min_length=1, max_length=30, strict=False)
    claims: tuple[Claim, ...] = Field((), strict=False, max_length=20)  # the primary claims
    # The validation accuracy the *_to_target figures count to (None: 90% of the best final
    # mean, never closer to chance than halfway from chance to the best).
    target: float | None = Field(None, gt=0, lt=1)
    # The training loss (dropout off) at which gap_at_matched_loss is read (Keskar et al.)
    matched_loss: float | None = Field(None, gt=0)

    @field_validator("comparisons", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            for pair in value:
                if not isinstance(pair, list | tuple) or len(pair) != 2:
                    shown = list(pair) if isinstance(pair, tuple) else pair
                    raise ValueError(
                        "each comparison is a [variant, reference] pair of two variant names, "
                        f"got {shown!r}"
                    )
            return tuple(tuple(p) if isinstance(p, list) else p for p in value)
        return value

    @model_validator(mode="after")
    def _fits_together(self) -> Definition:
        names = [variant.name for variant in self.variants]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"variant names must differ; repeated: {', '.join(twice)}")
        datasets = {variant.name: variant.dataset for variant in self.variants}
        first = self.variants[0]
        other = next((n for n, d in datasets.items() if d != first.dataset), None)
        if other is not None:
            raise ValueError(
                "every variant of an experiment trains on one dataset, so that their figures "
                f"compare: '{other}' trains on {datasets[other]}, '{first.name}' on "
                f"{first.dataset}; run them as two experiments"
            )
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline: {unknown('variant', self.baseline, names)}")
        for pair in self.comparisons:
            for name in pair:
                if name not in names:
                    raise ValueError(f"comparisons: {unknown('variant', name, names)}")
        for claim in self.claims:
            for name in claim.variants:
                if name not in names:
                    raise ValueError(f"claim {claim.name}: {unknown('variant', name, names)}")
            if claim.metric.endswith("_at_matched_loss") and self.matched_loss is None:
                raise ValueError(
                    f"claim {claim.name} is about {claim.metric}: set matched_loss, the "
                    "training loss at which it is read"
                )
        return self

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """The (variant, reference) pairs the conclusion compares."""
        if self.comparisons:
            return [tuple(pair) for pair in self.comparisons]
        base = self.baseline_name
        return [(v.name, base) for v in self.variants if v.name != base]

    @property
    def baseline_name(self) -> str:
        return self.baseline or self.variants[0].name


# ----------------------------------------------------------------------------- experiment.json
class Summary(_Record):
    """One figure across seeds: its mean, standard deviation (ddof=1; 0 for one seed), values."""

    mean: float | None = Field(strict=False)
    std: float | None = Field(strict=False)
    values: tuple[float, ...] = Field(strict=False)
    missing: int = Field(0, ge=0)  # runs without a value (e.g. the target never reached)


class GridPoint(_Record):
    """One rate of a variant's learning-rate grid: its tuning run's final validation figures."""

    learning_rate: float = Field(strict=False)
    val_accuracy: float | None = Field(None, strict=False)
    val_loss: float | None = Field(None, strict=False)
    diverged: bool = False
    failed: bool = False  # its tuning run failed on every try (a worker killed each time)
    run: str | None = None  # the tuning run's folder name, in runs/ (None: diverged, failed)


class Test(_Record):
    """One tested difference (a − b) or interaction ((a − b) − (c − d)) of a metric.

    Each interval is at the level of its Holm step (`level`, `statistics.holm_levels`: it
    excludes zero exactly when the adjusted test rejects), p values are Welch's (two-sided)
    and TOST's against ±margin, each Holm-adjusted over all m of them. `verdict` is
    "higher"/"lower" (a vs b, or the interaction's sign), "equivalent" (within ±margin),
    "inconclusive" or "not tested" (`sentence` says why).
    """

    metric: Literal[METRICS]
    variants: tuple[str, ...] = Field(strict=False)
    n: tuple[int, ...] = Field((), strict=False)  # seeds with a value, per variant
    estimate: float | None = Field(None, strict=False)
    low: float | None = Field(None, strict=False)
    high: float | None = Field(None, strict=False)
    level: float | None = Field(None, strict=False)
    p: float | None = Field(None, strict=False)
    p_adjusted: float | None = Field(None, strict=False)
    margin: float = Field(strict=False)
    p_equivalence: float | None = Field(None, strict=False)
    p_equivalence_adjusted: float | None = Field(None, strict=False)
    verdict: Literal[VERDICTS]
    power: float | None = Field(None, strict=False)  # to detect ±margin with these seeds
    detectable: float | None = Field(None, strict=False)  # the effect 80% power detects
    seeds_needed: int | None = None  # per variant, for 80% power at ±margin
    sentence: str


class ClaimResult(Test):
    """A primary claim's test, and whether the measurement agrees with the literature."""

    name: str
    statement: str
    anchor: str = ""
    expect: Literal[EXPECTATIONS]
    literature: Literal[LITERATURE]
    why: str = ""  # for "not tested" and "inconclusive": what the data cannot tell


class VariantResult(_Record):
    name: str
    description: str = ""
    spec: dict[str, Any]  # the variant's overrides, as in its definition
    runs: tuple[str, ...] = Field(strict=False)  # run folder names, in runs/
    seeds: tuple[int, ...] = Field(strict=False)
    batch_size: int
    learning_rate: float | None = Field(None, strict=False)
    test_accuracy: Summary
    final_train_loss: Summary
    final_val_loss: Summary
    generalization_gap: Summary  # validation loss − training loss at the last epoch
    seconds: Summary  # training seconds per run
    updates: int  # weight updates per run: steps per epoch × epochs
    diverged_seeds: tuple[int, ...] = Field((), strict=False)  # loss became NaN: no run
    epochs: int | None = None  # epochs per run (min_updates may raise the budget's)
    fit_digits: int | None = None  # digits each epoch trained on (train_digits may lower them)
    learning_rate_grid: tuple[GridPoint, ...] = Field((), strict=False)  # tuned variants
    train_accuracy: Summary | None = None  # on the training digits, dropout off, at the end
    epochs_to_target: Summary | None = None  # values only for runs that reached the target
    updates_to_target: Summary | None = None
    examples_to_target: Summary | None = None
    seconds_to_target: Summary | None = None
    gap_at_matched_loss: Summary | None = None
    sharpness_at_matched_loss: Summary | None = None
    # run name -> layer -> statistic -> one value per epoch (normalization experiment)
    activations: dict[str, dict[str, dict[str, list[float]]]] = Field(default_factory=dict)
    # An experiment on many workers (issue 24): per run, in `runs` order, the machine that
    # trained it and its folder there (each run stays where it was trained); the seeds whose
    # every try failed (a worker died each time): left out of the figures and tests.
    machines: tuple[str, ...] = Field((), strict=False)
    run_paths: tuple[str, ...] = Field((), strict=False)
    failed_seeds: tuple[int, ...] = Field((), strict=False)


class PredictionPart(_Record):
    """One tested consequence of a prediction: e.g. one batch size's digits to the target."""

    name: str  # what is predicted: a variant, or a variant pair
    predicted: str  # the prediction in words, with its numbers
    measured: str = ""  # what the runs measured, with its interval ("" while pending)
    verdict: Literal[PREDICTION_VERDICTS]
    why: str = ""  # how it held or missed, or why it can't be told
    # the numbers behind the words, for the figure: low/high of each interval, etc.
    values: dict[str, float | None] = Field(default_factory=dict, strict=False)


class Prediction(_Record):
    """A mechanism measured on the network before the runs, and what it predicted (issue 21).

    `statement` is printed before the runs start; `verdict`, `sentence` and `parts` are
    recomputed from the runs each time the record is written.
    """

    mechanism: str  # "noise-scale", "curvature" or "short-run-gap"
    statement: tuple[str, ...] = Field(strict=False)  # the prediction, in plain words
    measured: dict[str, Any] = Field(default_factory=dict)  # the mechanism's measurements
    made: datetime = Field(strict=False)  # when: before the first run
    seconds: float = Field(0.0, ge=0, strict=False)  # the measurement's wall time
    verdict: Literal[PREDICTION_VERDICTS] = "pending"
    sentence: str = ""  # "held: …", "missed by …: …" or "inconclusive: …"
    parts: tuple[PredictionPart, ...] = Field((), strict=False)


class ExperimentRecord(_Record):
    name: str
    question: str
    description: str = ""
    anchor: str = ""
    status: Literal[RECORD_STATUSES]
    created: datetime = Field(strict=False)
    updated: datetime = Field(strict=False)
    seeds: tuple[int, ...] = Field(strict=False)
    budget: dict[str, Any]
    learning_rate_policy: Literal[LEARNING_RATE_POLICIES]
    baseline: str
    variants: tuple[VariantResult, ...] = Field(strict=False)
    conclusion: tuple[str, ...] = Field(strict=False)
    statistics: str  # how differences were tested
    answer: tuple[str, ...] = Field((), strict=False)  # the answer in plain words, first
    claims: tuple[ClaimResult, ...] = Field((), strict=False)  # the primary claims' verdicts
    tests: tuple[Test, ...] = Field((), strict=False)  # every other comparison printed
    target: float | None = Field(None, strict=False)  # the *_to_target accuracy, if any
    smoke: bool = False  # a --quick run: too small to conclude anything
    plots: tuple[str, ...] = Field((), strict=False)
    definition: dict[str, Any] = Field(default_factory=dict)  # what was run, to resume it
    wall_seconds: float = Field(0.0, ge=0, strict=False)  # the runs, statistics and plots
    cpu_seconds: float = Field(0.0, ge=0, strict=False)  # CPU time of the process, all threads
    study: str = ""  # on many workers: the Optuna study holding the cells (`tune dashboard`)
    storage: str = ""  # and where it is: the journal file, or the database URL (no password)
    prediction: Prediction | None = None  # issue 21: the mechanism's prediction, judged
    guess: str | None = Field(None, max_length=500)  # the learner's own, before the runs


for _model in (
    Budget,
    Claim,
    Variant,
    Definition,
    Summary,
    GridPoint,
    Test,
    ClaimResult,
    VariantResult,
    PredictionPart,
    Prediction,
    ExperimentRecord,
):
    register(_model)
