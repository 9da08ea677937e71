"""How good is a trained network: loss, accuracy, confusion matrix, per-class report, pictures.

A saved run is measured without Keras when `forward.load_forward` runs its network: the test
set's outputs in NumPy, the loss computed from them as Keras computes it (`numpy_loss`), and
the per-class figures from the confusion matrix (`per_class_report`, scikit-learn's
`classification_report(output_dict=True)` to the last bit). Importing Keras and JAX, then
scikit-learn, took ~4 s of `evaluate --json`'s 8 (issue 23); tests/test_instant.py checks
both against their oracles. scikit-learn still writes the report's text, and Keras
measures a network with a layer NumPy doesn't run or with weight penalties.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from digitlab.data import load_dataset
from digitlab.forward import output_activation, prepare_inputs, to_probabilities
from digitlab.runs import Run, load_run
from digitlab.schema import Spec

CONFUSION_PNG = "confusion_matrix.png"
MISCLASSIFIED_PNG = "misclassified.png"
CURVES_PNG = "training_curves.png"
KERAS_EPSILON = 1e-7  # keras.backend.epsilon(): cross-entropy clips probabilities to it


class Report(Mapping):
    """An evaluation's report: `str()` is the text `digitlab evaluate` prints, and it reads
    as the per-class mapping (`report["7"]["recall"]`, `report.to_dict()`)."""

    def __init__(self, text: str, per_class: dict[str, Any]):
        self.text = text
        self._per_class = per_class

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return self.text

    def __getitem__(self, key: str) -> Any:
        return self._per_class[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._per_class)

    def __len__(self) -> int:
        return len(self._per_class)

    def to_dict(self) -> dict[str, Any]:
        """Per-class precision, recall, F1 and support, with accuracy and the averages."""
        return dict(self._per_class)

    def _repr_pretty_(self, printer, cycle) -> None:  # IPython: the text, not a dict
        printer.text(self.text)


@dataclass
class Evaluation:
    """The test-set figures of one model. `to_dict()` is what metrics.json stores."""

    loss: float
    accuracy: float
    confusion_matrix: np.ndarray
    class_names: list[str]
    probabilities: np.ndarray
    labels: np.ndarray

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def misclassified(self) -> np.ndarray:
        """Indices of the test digits the model gets wrong."""
        return np.flatnonzero(self.predictions != self.labels)

    def report(self) -> Report:
        """The text report `digitlab evaluate` prints, as an object: `str(report)` is that
        text (loss and accuracy, confusion matrix, per-class table, most-confused pairs);
        `report.to_dict()` (or `report["7"]["recall"]`) gives the per-class numbers.

        Example:
            >>> evaluation = digitlab.evaluate("latest")
            >>> print(evaluation.report())           # as the CLI prints it
            >>> evaluation.report()["macro avg"]["f1-score"]
        """
        pairs = ", ".join(
            f"{p['true']}→{p['predicted']} ({p['count']})" for p in self.most_confused()
        )
        lines = [
            f"test loss {self.loss:.4f}   test accuracy {self.accuracy:.2%}"
            f"   ({len(self.misclassified)} of {len(self.labels)} wrong)",
            "",
            "confusion matrix (rows: true label, columns: predicted)",
            np.array2string(self.confusion_matrix, max_line_width=200),
            "",
            self.report_text(),
            f"most confused: {pairs or 'none'}",
        ]
        return Report("\n".join(lines), self.per_class())

    def report_text(self) -> str:
        """The per-class table alone: scikit-learn's classification report, four decimals."""
        from sklearn.metrics import classification_report  # ~1 s to import: only for the text

        return classification_report(
            self.labels,
            self.predictions,
            labels=range(len(self.class_names)),
            target_names=self.class_names,
            zero_division=0,
            digits=4,
        )

    def per_class(self) -> dict[str, Any]:
        """Per-class precision, recall, F1 and support, with accuracy and the averages
        (`per_class_report` of the confusion matrix)."""
        return per_class_report(self.confusion_matrix, self.class_names)

    def print(self, console, run_dir: Path) -> None:
        """What `digitlab evaluate` prints on a `rich.console.Console`: the run, test loss and
        accuracy, confusion matrix, per-class report, most-confused pairs and the pictures
        in `run_dir`. The matrix and report go out as they are (no wrapping, no markup)."""
        console.print(f"run {run_dir}")
        console.print(
            f"test loss {self.loss:.4f}   test accuracy [bold]{self.accuracy:.2%}[/bold]"
            f"   ({len(self.misclassified)} of {len(self.labels)} wrong)"
        )
        console.print("\nconfusion matrix (rows: true label, columns: predicted)")
        console.out(np.array2string(self.confusion_matrix, max_line_width=200), highlight=False)
        console.out("\n" + self.report_text(), highlight=False)
        pairs = ", ".join(
            f"{p['true']}→{p['predicted']} ({p['count']})" for p in self.most_confused()
        )
        console.print(f"most confused: {pairs or 'none'}")
        for picture in (CONFUSION_PNG, MISCLASSIFIED_PNG, CURVES_PNG):
            if (run_dir / picture).exists():
                console.print(f"wrote {run_dir / picture}")

    def most_confused(self, top: int = 5) -> list[dict[str, Any]]:
        """The `top` (true, predicted) pairs with the most mistakes, largest first."""
        off_diagonal = self.confusion_matrix.copy()
        np.fill_diagonal(off_diagonal, 0)
        order = np.argsort(off_diagonal, axis=None)[::-1][:top]
        pairs = []
        for flat in order:
            true, pred = np.unravel_index(flat, off_diagonal.shape)
            if off_diagonal[true, pred] == 0:
                break
            pairs.append(
                {
                    "true": self.class_names[true],
                    "predicted": self.class_names[pred],
                    "count": int(off_diagonal[true, pred]),
                }
            )
        return pairs

    def __repr__(self) -> str:
        """One line: test accuracy and loss, errors (the arrays are attributes)."""
        return (
            f"<Evaluation: test accuracy {self.accuracy:.2%}, loss {self.loss:.4f}, "
            f"{len(self.misclassified)} of {len(self.labels)} wrong>"
        )

    def _repr_html_(self) -> str:
        """Jupyter's inline view: the key figures and the confusion matrix as a PNG data URI."""
        from digitlab import display, plots

        pairs = ", ".join(
            f"{p['true']}→{p['predicted']} ({p['count']})" for p in self.most_confused()
        )
        rows = [
            ("test accuracy", display.percent(self.accuracy)),
            ("test loss", display.number(self.loss)),
            ("wrong", f"{len(self.misclassified):,} of {len(self.labels):,}"),
            ("most confused", pairs or "none"),
        ]
        confusion = display.drawn_figure(
            lambda path: plots.save_confusion_matrix(self.confusion_matrix, self.class_names, path),
            "Confusion matrix",
        )
        return display.card("Evaluation", rows, [confusion])

    def to_dict(self) -> dict[str, Any]:
        return {
            "test_loss": self.loss,
            "test_accuracy": self.accuracy,
            "test_errors": len(self.misclassified),
            "confusion_matrix": self.confusion_matrix.tolist(),
            "classification_report": self.per_class(),
            "most_confused": self.most_confused(),
        }


def evaluate_model(
    model, spec: Spec, x_test: np.ndarray, y_test: np.ndarray, class_names: list[str]
) -> Evaluation:
    """Evaluate a compiled Keras model on uint8 test images with integer labels: its outputs
    from `model.predict`, and the loss `model.evaluate` would give computed from them
    (`numpy_loss`), which spares a second pass over the test set; `model.evaluate` itself
    for a network whose weight penalties Keras adds to the loss."""
    x = prepare_inputs(x_test, spec.input_shape)
    outputs = model.predict(x, batch_size=1024, verbose=0)
    loss = numpy_loss(outputs, y_test, spec)
    if loss is None:
        targets = loss_targets(y_test, spec, len(class_names))
        loss = model.evaluate(x, targets, batch_size=1024, verbose=0, return_dict=True)["loss"]
    return _evaluation(outputs, float(loss), spec, y_test, class_names)


def _evaluation(
    outputs: np.ndarray, loss: float, spec: Spec, y_test: np.ndarray, class_names: list[str]
) -> Evaluation:
    probabilities = to_probabilities(outputs, output_activation(spec))
    predictions = probabilities.argmax(axis=1)
    return Evaluation(
        loss=loss,
        accuracy=float((predictions == y_test).mean()),
        confusion_matrix=confusion_matrix(y_test, predictions, len(class_names)),
        class_names=list(class_names),
        probabilities=probabilities,
        labels=np.asarray(y_test),
    )


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts of (true label, predicted class): rows true, columns predicted, int64, as
    scikit-learn's `confusion_matrix(labels, predictions, labels=range(num_classes))`."""
    pairs = np.asarray(labels, np.int64) * num_classes + np.asarray(predictions, np.int64)
    return np.bincount(pairs, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_report(confusion: np.ndarray, class_names: list[str]) -> dict[str, Any]:
    """scikit-learn's `classification_report(..., output_dict=True, zero_division=0)`, from
    the confusion matrix: per class its precision, recall, F1 and support, then accuracy
    and the macro and weighted averages, every value a float. Computed as scikit-learn
    computes them (F1 = 2·tp / (true + predicted)), without its ~1 s import; the tests hold
    it to scikit-learn's own figures."""
    confusion = np.asarray(confusion)
    tp = np.diagonal(confusion).astype(np.float64)
    true, predicted = confusion.sum(axis=1), confusion.sum(axis=0)

    def divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
        safe = np.where(denominator == 0, 1, denominator).astype(np.float64)
        return np.where(denominator == 0, 0.0, numerator / safe)  # zero_division=0

    precision, recall = divide(tp, predicted), divide(tp, true)
    f1 = divide(2.0 * tp, 1.0 * true.astype(np.float64) + predicted)
    names = ("precision", "recall", "f1-score", "support")
    report: dict[str, Any] = {
        name: dict(zip(names, map(float, row), strict=True))
        for name, *row in zip(class_names, precision, recall, f1, true, strict=True)
    }
    support = float(true.sum())
    report["accuracy"] = float(tp.sum() / support) if support else 0.0
    scores = (precision, recall, f1)
    weights = true if true.any() else None  # no digits at all: scikit-learn's plain mean
    for average, weighted in (("macro avg", None), ("weighted avg", weights)):
        values = [*(float(np.average(a, weights=weighted)) for a in scores), support]
        report[average] = dict(zip(names, values, strict=True))
    return report


def numpy_loss(outputs: np.ndarray, labels: np.ndarray, spec: Spec) -> float | None:
    """The test loss `model.evaluate` reports, from the network's outputs: the spec's loss
    computed as Keras's JAX backend computes it (float32, cross-entropy's probabilities
    normalised and clipped to [1e-7, 1 − 1e-7], or from logits for a linear output, as
    `model.compile_model` compiles it), averaged over the digits. None where Keras would
    add more: a layer with a weight or activity penalty (`*_regularizer`)."""
    penalties = (v for layer in spec.layers for k, v in layer.items() if k.endswith("_regularizer"))
    if any(penalties):
        return None
    outputs = np.asarray(outputs, np.float32)
    labels = np.asarray(labels)
    name, classes = spec.train.loss, outputs.shape[1]
    if name.endswith("crossentropy"):
        if output_activation(spec) == "linear":  # from_logits=True
            shifted = outputs - outputs.max(axis=1, keepdims=True)
            log_prob = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        else:
            epsilon = np.float32(KERAS_EPSILON)
            with np.errstate(divide="ignore", invalid="ignore"):  # an all-zero row: NaN, as Keras
                normalised = outputs / outputs.sum(axis=1, keepdims=True)
            log_prob = np.log(np.clip(normalised, epsilon, np.float32(1) - epsilon))
        per_digit = -log_prob[np.arange(len(labels)), labels]
    else:
        targets = np.eye(classes, dtype=np.float32)[labels]
        errors = {"mean_squared_error": np.square, "mean_absolute_error": np.abs}.get(name)
        if errors is None:
            return None
        per_digit = errors(targets - outputs).mean(axis=1)
    return float(per_digit.astype(np.float64).mean())


def loss_targets(labels: np.ndarray, spec: Spec, num_classes: int) -> np.ndarray:
    """Integer labels, or one-hot float32 for every loss but the sparse one."""
    if not spec.train.one_hot:
        return labels
    return np.eye(num_classes, dtype=np.float32)[labels]


def write_pictures(
    run_dir: Path, evaluation: Evaluation, history: dict[str, list[float]], x_test: np.ndarray
) -> list[Path]:
    """Draw the confusion heatmap, the misclassified gallery and the training curves."""
    from digitlab import plots  # matplotlib: only where a picture is drawn

    wrong = evaluation.misclassified
    confidence = evaluation.probabilities[wrong].max(axis=1)
    order = np.argsort(-confidence, kind="stable")  # the most confident mistakes first
    wrong, confidence = wrong[order], confidence[order]
    paths = [
        plots.save_confusion_matrix(
            evaluation.confusion_matrix, evaluation.class_names, run_dir / CONFUSION_PNG
        ),
        plots.save_misclassified(
            x_test[wrong],
            evaluation.labels[wrong],
            evaluation.predictions[wrong],
            evaluation.class_names,
            run_dir / MISCLASSIFIED_PNG,
            probabilities=confidence,
        ),
    ]
    if history:
        paths.append(plots.save_training_curves(history, run_dir / CURVES_PNG))
    return paths


def measure(run: Run | str | Path, data_dir: str | Path | None = None) -> Evaluation:
    """A run's figures on its dataset's test split, drawing nothing: `evaluate --json`.

    The network runs in NumPy and the loss is computed from its outputs (`numpy_loss`) when
    `forward.load_forward` knows every layer; otherwise Keras loads the model and runs
    `model.predict` and `model.evaluate`.

    Args:
        run: a `Run`, or a run path/name/"latest" for `load_run`.
        data_dir: a folder holding the dataset files, as for `load_dataset`.

    Raises:
        RunError: the run cannot be found or loaded.
        DataError: the dataset cannot be loaded.
    """
    run = run if isinstance(run, Run) else load_run(run)
    _, (x_test, y_test) = load_dataset(run.dataset.name, data_dir=data_dir)
    return _measure(run, x_test, y_test)


def _measure(run: Run, x_test: np.ndarray, y_test: np.ndarray) -> Evaluation:
    from digitlab.errors import RunError
    from digitlab.files import MAX_MODEL_BYTES, check_regular
    from digitlab.forward import load_forward
    from digitlab.runs import MODEL_FILE

    check_regular(run.path / MODEL_FILE, MAX_MODEL_BYTES, RunError)  # as `run.model` does
    x_test = run.network_images(x_test)
    forward = load_forward(run.path / MODEL_FILE)
    if forward is not None:
        outputs = forward(prepare_inputs(x_test, run.spec.input_shape))
        loss = numpy_loss(outputs, y_test, run.spec)
        if loss is not None:
            return _evaluation(outputs, loss, run.spec, y_test, run.class_names)
    return evaluate_model(run.model, run.spec, x_test, y_test, run.class_names)


def evaluate(run: Run | str | Path, data_dir: str | Path | None = None) -> Evaluation:
    """Evaluate a run on its dataset's test split (`measure`), and (re)draw its pictures in
    the run folder.

    Args:
        run: a `Run`, or a run path/name/"latest" for `load_run`.
        data_dir: a folder holding the dataset files, as for `load_dataset`.

    Returns:
        The `Evaluation`; `.to_dict()` gives the JSON form.

    Raises:
        RunError: the run cannot be found or loaded.
        DataError: the dataset cannot be loaded.

    Example:
        >>> import digitlab
        >>> evaluation = digitlab.evaluate("latest")
        >>> print(evaluation.report())  # the text `digitlab evaluate latest` prints
        >>> evaluation.confusion_matrix[7, 2]  # sevens taken for twos
    """
    run = run if isinstance(run, Run) else load_run(run)
    _, (x_test, y_test) = load_dataset(run.dataset.name, data_dir=data_dir)
    evaluation = _measure(run, x_test, y_test)
    write_pictures(run.path, evaluation, run.history, x_test)
    return evaluation
