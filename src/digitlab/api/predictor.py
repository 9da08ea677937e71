"""The served run's predictions, as the routes return them."""

from __future__ import annotations

import base64
import contextlib
import random
import threading
from typing import Any

import numpy as np

from digitlab.api.schemas import (
    BatchPrediction,
    Explanation,
    PredictedImage,
    Prediction,
    RefusedImage,
    SampleDigit,
)
from digitlab.api.uploads import image_shape
from digitlab.confidence import verdicts
from digitlab.errors import ImageError
from digitlab.preprocess import to_png
from digitlab.runs import Run


class Predictor:
    """The run's model and test set, loaded once, and the predictions the endpoints return.

    Args:
        run: the run served; its model is loaded on first use (`warm`).
    """

    def __init__(self, run: Run):
        self.run = run
        self.class_names = run.class_names
        self.shape = image_shape(run)
        self._test_set: tuple[np.ndarray, np.ndarray] | None = None
        self._explainer = threading.Thread(target=self._warm_explanation, name="warm-explain")

    def warm(self) -> None:
        """Load the model for predictions (in NumPy: milliseconds, `Run.predict_proba`), then
        start compiling the explanation (JAX: seconds) in the background, so the server
        answers at once; an explanation asked for meanwhile waits for it (`explain`)."""
        self.probabilities(np.zeros((1, *self.shape), np.uint8))
        if self._explainer.ident is None:  # a thread starts once: an app restarted in tests
            self._explainer.start()

    def _warm_explanation(self) -> None:
        from digitlab.insight import explain

        # a failure here is the first /explain's to report, in its own answer
        with contextlib.suppress(Exception):
            explain(self.run, np.zeros(self.shape, np.uint8))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for uint8 N×28×28. `Run.predict_proba` pads each batch to a
        power of two, so JAX compiles a handful of shapes, not one per batch size."""
        return self.run.predict_proba(images)

    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        """The prediction of each uint8 image, with the library's confidence verdict."""
        batch = np.stack(images)
        probabilities = self.probabilities(batch)
        judged = verdicts(self.run, batch, probabilities)  # the library's one verdict
        return [
            self._prediction(x, p, v) for x, p, v in zip(images, probabilities, judged, strict=True)
        ]

    def predict_batch(self, images: list[np.ndarray | ImageError]) -> BatchPrediction:
        """A batch's answers, in order: the readable images predicted together, each
        unreadable one refused in its place with its error."""
        readable = [image for image in images if not isinstance(image, ImageError)]
        predicted = iter(self.predict(readable) if readable else [])
        entries = [
            RefusedImage(index=i, error=str(image))
            if isinstance(image, ImageError)
            else PredictedImage(**next(predicted).model_dump(), index=i)
            for i, image in enumerate(images)
        ]
        return BatchPrediction(predictions=entries, failed=len(images) - len(readable))

    def explain(self, image: np.ndarray) -> Explanation:
        """The prediction of one uint8 28×28 image, with `insight.explain`'s why."""
        from digitlab.insight import explain, saliency_base64

        prediction = self.predict([image])[0]
        if self._explainer.is_alive():  # compiling: computing it alongside would do it twice
            self._explainer.join()
        why = explain(self.run, image)
        return Explanation(
            **prediction.model_dump(),
            top3=why.top3,
            target=why.target,
            method=why.method,
            saliency=saliency_base64(np.asarray(why.saliency)),
            layers=why.layers,
        )

    def _prediction(
        self, image: np.ndarray, probabilities: np.ndarray, verdict: dict[str, Any]
    ) -> Prediction:
        digit = int(probabilities.argmax())
        return Prediction(
            digit=digit,
            label=self.class_names[digit],
            probabilities=[round(float(p), 6) for p in probabilities],
            preprocessed=base64.b64encode(to_png(image)).decode("ascii"),
            **verdict,
        )

    def test_digit(self, index: int | None) -> SampleDigit:
        """A digit from the run's own test set (loaded on first use) and its prediction."""
        if self._test_set is None:
            from digitlab.data import load_dataset

            self._test_set = load_dataset(self.run.dataset.name)[1]
        images, labels = self._test_set
        if index is None:
            index = random.randrange(len(images))
        if not 0 <= index < len(images):
            raise ImageError(f"index must be between 0 and {len(images) - 1}")
        prediction = self.predict([images[index]])[0]
        return SampleDigit(**prediction.model_dump(), index=index, expected=int(labels[index]))
