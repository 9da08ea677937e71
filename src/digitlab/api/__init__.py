"""The HTTP API and the drawing page: `create_app(run)` builds a FastAPI app around one run,
`run_server` serves it with uvicorn. The public names are re-exported here."""

from digitlab.api.app import (
    MAX_BATCH,
    BatchPrediction,
    ErrorDetail,
    Explanation,
    LayerActivation,
    ModelInfo,
    Prediction,
    Predictor,
    SampleDigit,
    TopClass,
    bind_port,
    check_port,
    create_app,
    pixels_to_image,
    run_server,
)

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
    "check_port",
    "create_app",
    "pixels_to_image",
    "run_server",
]
