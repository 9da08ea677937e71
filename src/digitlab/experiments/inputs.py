"""The digits an experiment measures its runs on, loaded once per dataset and shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from digitlab.experiments import plan
from digitlab.experiments.schema import Budget
from digitlab.schema import Spec


class Inputs:
    """The digits an experiment measures its runs on, loaded once per dataset and shape: the
    training digits fit sees (the training loss in inference mode) and the activation batch
    (`plan.ACTIVATION_BATCH` validation digits just before the test-free end)."""

    def __init__(self, budget: Budget, data_dir: str | Path | None):
        self.budget, self.data_dir = budget, data_dir
        self._train: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._arrays: dict[tuple, np.ndarray] = {}

    def _training_digits(self, dataset: str) -> tuple[np.ndarray, np.ndarray]:
        from digitlab.data import load_dataset

        if dataset not in self._train:
            self._train[dataset] = load_dataset(dataset, data_dir=self.data_dir)[0]
        return self._train[dataset]

    def standardize(self, dataset: str, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Each pixel's mean and deviation (scaled to [0, 1]) over the training digits fit
        sees, shaped as the network's input."""
        from digitlab.model import prepare_inputs

        x, _ = self._training_digits(dataset)
        key = (dataset, shape, "standardize")
        if key not in self._arrays:
            pixels = prepare_inputs(x[: self.budget.fit_samples])
            self._arrays[key] = plan.standardization(pixels, shape)
        return self._arrays[key]

    def for_spec(self, spec: Spec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(fit images, their loss targets, the activation batch), as `spec`'s network takes
        them: the first digits its runs train on (`plan.fit_digits`) and the last of the
        validation digits right after them."""
        from digitlab.data import class_names
        from digitlab.evaluation import loss_targets
        from digitlab.model import prepare_inputs

        dataset, shape = spec.train.dataset, spec.input_shape
        fit, end = plan.fit_digits(spec), spec.train.train_samples or 0
        start = max(fit, end - plan.ACTIVATION_BATCH)
        x, y = self._training_digits(dataset)
        classes = len(class_names(dataset))
        return (
            self._cached((dataset, shape, "fit", fit), lambda: prepare_inputs(x[:fit], shape)),
            self._cached(
                (dataset, spec.train.one_hot, fit), lambda: loss_targets(y[:fit], spec, classes)
            ),
            self._cached(
                (dataset, shape, "batch", start, end), lambda: prepare_inputs(x[start:end], shape)
            ),
        )

    def _cached(self, key: tuple, make) -> np.ndarray:
        if key not in self._arrays:
            self._arrays[key] = make()
        return self._arrays[key]
