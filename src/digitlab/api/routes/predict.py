"""Prediction and explanation: `/predict`, `/explain` and `/predict/batch`.

Each takes an image file of any size (multipart) or MNIST-style JSON pixels, read by
`deps.one_image` / `deps.batch_images` (`uploads.ImageReader`). The request body's OpenAPI
depends on the run's image shape, so the router is built per app (`router(shape)`).
"""

from __future__ import annotations

import numpy as np
from fastapi import APIRouter, Depends

from digitlab.api.deps import batch_images, get_predictor, one_image
from digitlab.api.predictor import Predictor
from digitlab.api.schemas import BatchPrediction, Explanation, Prediction, errors, request_body
from digitlab.errors import ImageError

UPLOAD_ERRORS = errors(400, 413, 415, 422)
BATCH_ERRORS = errors(400, 413, 415, 422, batch=True)


async def predict(
    image: np.ndarray = Depends(one_image), predictor: Predictor = Depends(get_predictor)
) -> Prediction:
    """Predict one digit: an image file of any size, or 28×28 MNIST-style pixels."""
    return predictor.predict([image])[0]


async def explain(
    image: np.ndarray = Depends(one_image), predictor: Predictor = Depends(get_predictor)
) -> Explanation:
    """Predict one digit and show why: the same inputs and errors as `/predict`, plus the
    top 3, each layer's activations and a saliency map (integrated gradients)."""
    return predictor.explain(image)


async def predict_batch(
    images: list[np.ndarray | ImageError] = Depends(batch_images),
    predictor: Predictor = Depends(get_predictor),
) -> BatchPrediction:
    """Predict up to 64 digits in one request: image files, or MNIST-style pixel arrays.

    One bad image doesn't sink the others: the answer is 200 with an entry per image, in
    order, either its prediction or `{"index", "error"}` (`failed` counts these). Only a
    problem with the request itself (no images, more than 64, not JSON or a form, over a
    size limit) is a 4xx."""
    return predictor.predict_batch(images)


def router(shape: tuple[int, int]) -> APIRouter:
    """The prediction routes, their request bodies documented for images of `shape`."""
    routes = APIRouter()
    for path, endpoint, many in (
        ("/predict", predict, False),
        ("/explain", explain, False),
        ("/predict/batch", predict_batch, True),
    ):
        routes.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            responses=BATCH_ERRORS if many else UPLOAD_ERRORS,
            openapi_extra=request_body(many, shape),
        )
    return routes
