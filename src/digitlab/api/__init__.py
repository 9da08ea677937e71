"""The HTTP API and the drawing page: `create_app(run)` builds a FastAPI app around one run,
`run_server` serves it with uvicorn. The public names are re-exported here.

    POST /predict          one image (multipart field "file") or JSON {"pixels": ...}
    POST /predict/batch    many images (multipart fields "files") or JSON {"images": [...]}
    POST /explain          as /predict, plus each layer's activations and a saliency map
    GET  /random-test-digit   a real test-set digit and the model's prediction for it
    GET  /model, /health, /docs, and / (the drawing page, from static/)

The package, FastAPI's "bigger applications" layout: `app` (the factory and its lifespan),
`routes/` (one router per concern: `predict`, `model`, `page`), `deps` (the run and its
predictor, via `Depends`), `uploads` (reading a request's images, and every limit on them),
`schemas` (response and error models, OpenAPI), `predictor` and `server` (binding, uvicorn).
"""

from digitlab.api.app import create_app
from digitlab.api.predictor import Predictor
from digitlab.api.schemas import (
    BatchPrediction,
    ErrorDetail,
    Explanation,
    LayerActivation,
    ModelInfo,
    Prediction,
    SampleDigit,
    TopClass,
)
from digitlab.api.server import bind_port, run_server
from digitlab.api.uploads import MAX_BATCH, pixels_to_image

__all__ = [
    "MAX_BATCH",
    "BatchPrediction",
    "ErrorDetail",
    "Explanation",
    "LayerActivation",
    "ModelInfo",
    "Prediction",
    "Predictor",
    "SampleDigit",
    "TopClass",
    "bind_port",
    "create_app",
    "pixels_to_image",
    "run_server",
]
