"""The HTTP API and the drawing page: `create_app(run)` builds a FastAPI app around one run.

The run's model is loaded once, in the app's lifespan, and warmed with one prediction so the
first request doesn't pay for compilation. Every request is checked at this edge: a body over
the size limit, a broken or huge image, an empty canvas or bad pixel values get a 4xx with
`{"detail": "..."}`, never a 500.

    POST /predict          one image (multipart field "file") or JSON {"pixels": ...}
    POST /predict/batch    many images (multipart fields "files") or JSON {"images": [...]}
    GET  /random-test-digit   a real test-set digit and the model's prediction for it
    GET  /model, /health, /docs, and / (the drawing page, from static/)
"""

from __future__ import annotations

import base64
import json
import random
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from digitlab.errors import DigitlabError, ImageError
from digitlab.preprocess import MAX_BYTES, load_image, preprocess, to_png
from digitlab.runs import Run, load_run

STATIC_DIR = Path(__file__).parent / "static"
MAX_BATCH = 64  # images per /predict/batch request
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers, on top of the image itself
INLINE_BYTES = 256 * 1024  # uploads up to this size are decoded on the event loop; see _compute


class Prediction(BaseModel):
    digit: int
    label: str
    probabilities: list[float]
    preprocessed: str  # base64 PNG of the 28×28 the model saw, white digit on black


class BatchPrediction(BaseModel):
    predictions: list[Prediction]


class SampleDigit(Prediction):
    index: int
    expected: int


class ModelInfo(BaseModel):
    run: str
    preset: str | None
    dataset: str | None
    test_accuracy: float | None
    parameters: int
    class_names: list[str]


PIXELS_DOC = (
    "784 numbers, or 28 rows of 28, each 0–255, MNIST-style: white digit on black, already "
    "28×28 and centred. They skip preprocessing."
)


def _request_body(files_field: str, json_field: str, many: bool) -> dict[str, Any]:
    """OpenAPI for a body that is a multipart upload or JSON pixels (FastAPI can't infer it:
    the endpoints read the request themselves to accept either)."""
    file = {"type": "string", "format": "binary"}
    upload = {"type": "array", "items": file} if many else file
    pixels = {"type": "array", "description": PIXELS_DOC + (" One per image." if many else "")}
    content = {
        "multipart/form-data": {"schema": {"type": "object", "properties": {files_field: upload}}},
        "application/json": {"schema": {"type": "object", "properties": {json_field: pixels}}},
    }
    return {"requestBody": {"required": True, "content": content}}


class Predictor:
    """The run's model and test set, loaded once, and the predictions the endpoints return."""

    def __init__(self, run: Run, max_upload_bytes: int):
        self.run = run
        self.class_names = run.class_names
        self.max_upload_bytes = max_upload_bytes
        self._test_set: tuple[np.ndarray, np.ndarray] | None = None

    def warm(self) -> None:
        """Load the model and compile its one-image prediction."""
        self.probabilities(np.zeros((1, 28, 28), np.uint8))

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for uint8 N×28×28. `Run.predict_proba` pads each batch to a
        power of two, so JAX compiles a handful of shapes, not one per batch size."""
        return self.run.predict_proba(images)

    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        probabilities = self.probabilities(np.stack(images))
        return [self._prediction(x, p) for x, p in zip(images, probabilities, strict=True)]

    def predict_files(self, files: list[bytes]) -> list[Prediction]:
        images = []
        for i, data in enumerate(files):
            try:
                images.append(preprocess(load_image(data, max_bytes=self.max_upload_bytes)))
            except ImageError as exc:
                raise ImageError(f"image {i + 1}: {exc}" if len(files) > 1 else str(exc)) from None
        return self.predict(images)

    def _prediction(self, image: np.ndarray, probabilities: np.ndarray) -> Prediction:
        digit = int(probabilities.argmax())
        return Prediction(
            digit=digit,
            label=self.class_names[digit],
            probabilities=[round(float(p), 6) for p in probabilities],
            preprocessed=base64.b64encode(to_png(image)).decode("ascii"),
        )

    def test_digit(self, index: int | None) -> SampleDigit:
        """A digit from the run's own test set (loaded on first use) and its prediction."""
        if self._test_set is None:
            from digitlab.data import load_dataset

            self._test_set = load_dataset(self.run.config["dataset"]["name"])[1]
        images, labels = self._test_set
        if index is None:
            index = random.randrange(len(images))
        if not 0 <= index < len(images):
            raise ImageError(f"index must be between 0 and {len(images) - 1}")
        prediction = self.predict([images[index]])[0]
        return SampleDigit(**prediction.model_dump(), index=index, expected=int(labels[index]))


def create_app(run_ref: str | Path | Run, *, max_upload_bytes: int = MAX_BYTES) -> FastAPI:
    """Build the API and drawing page for one run.

    Args:
        run_ref: a `Run`, or a path, a name in the runs folder, or "latest" (see `load_run`).
            It is opened here, so a wrong reference fails before the server starts; the
            model itself is loaded in the lifespan.
        max_upload_bytes: largest image file accepted, default 5 MiB. A request body may be
            this plus 64 KiB of form overhead; a batch shares the one limit.

    Raises:
        RunError: no such run.
    """
    run = run_ref if isinstance(run_ref, Run) else load_run(run_ref)
    model = Predictor(run, max_upload_bytes)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(model.warm)
        yield

    # FastAPIOffline serves the /docs assets itself: plain FastAPI fetches them from a CDN.
    app = FastAPIOffline(
        title="digitlab",
        summary=f"Handwritten digit recognition with run {run.name}",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)

    @app.exception_handler(DigitlabError)
    async def unprocessable(request: Request, exc: DigitlabError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    @app.post("/predict", openapi_extra=_request_body("file", "pixels", many=False))
    async def predict(request: Request) -> Prediction:
        """Predict one digit: an image file of any size, or 28×28 MNIST-style pixels."""
        if _is_json(request):
            body = await _json_object(request, "pixels")
            return model.predict([pixels_to_image(body["pixels"])])[0]  # ~0.3 ms: inline
        files = await _uploads(request, "file", model.max_upload_bytes, limit=1)
        return (await _compute(model.predict_files, files))[0]

    @app.post("/predict/batch", openapi_extra=_request_body("files", "images", many=True))
    async def predict_batch(request: Request) -> BatchPrediction:
        """Predict up to 64 digits in one request: image files, or MNIST-style pixel arrays."""
        if _is_json(request):
            body = await _json_object(request, "images")
            images = body["images"]
            if not isinstance(images, list) or not 1 <= len(images) <= MAX_BATCH:
                raise HTTPException(422, f'"images" must be a list of 1 to {MAX_BATCH} images')
            arrays = [pixels_to_image(x, f"image {i + 1}: ") for i, x in enumerate(images)]
            return BatchPrediction(predictions=model.predict(arrays))
        files = await _uploads(request, "files", model.max_upload_bytes, limit=MAX_BATCH)
        return BatchPrediction(predictions=await _compute(model.predict_files, files))

    @app.get("/random-test-digit")
    async def random_test_digit(index: int | None = None) -> SampleDigit:
        """A real digit from the run's test set (random, or `index`) and its prediction."""
        try:
            return await run_in_threadpool(model.test_digit, index)
        except DigitlabError as exc:
            if isinstance(exc, ImageError):
                raise
            raise HTTPException(503, f"the test set is unavailable: {exc}") from None

    @app.get("/model")
    async def model_info() -> ModelInfo:
        """Which run is served: its preset, dataset, test accuracy and size."""
        return ModelInfo(
            run=run.name,
            preset=run.config.get("spec", {}).get("name"),
            dataset=run.config.get("dataset", {}).get("name"),
            test_accuracy=run.metrics.get("test_accuracy"),
            parameters=run.model.count_params(),
            class_names=model.class_names,
        )

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: answers once the model is loaded."""
        return {"status": "ok", "run": run.name}

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


async def _compute(predict_files, files: list[bytes]) -> list[Prediction]:
    """Decode and predict on the event loop when the files are small, else in a thread.

    A canvas PNG takes ~3 ms of CPU, less than a trip through the thread pool and the GIL
    hand-offs it brings; a big photo can take 100 ms, which would stall every other request.
    """
    if sum(len(data) for data in files) <= INLINE_BYTES:
        return predict_files(files)
    return await run_in_threadpool(predict_files, files)


def pixels_to_image(pixels: Any, where: str = "") -> np.ndarray:
    """Validate JSON pixels (784 numbers or 28×28, 0–255) into a uint8 28×28 array.

    Raises:
        ImageError: wrong count or shape, not numbers, or values outside 0–255.
    """
    try:
        array = np.asarray(pixels)
    except ValueError:  # ragged rows
        array = np.asarray(None)
    if array.dtype.kind not in "iuf" or array.shape not in {(784,), (28, 28)}:
        got = f"shape {array.shape}" if array.dtype.kind in "iuf" else "something else"
        raise ImageError(f"{where}pixels must be 784 numbers or 28 rows of 28 numbers; got {got}")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 255:
        raise ImageError(f"{where}pixel values must be between 0 and 255 (white digit on black)")
    return np.rint(array).astype(np.uint8).reshape(28, 28)


def _is_json(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        return True
    if kind == "multipart/form-data":
        return False
    raise HTTPException(
        415, 'send multipart/form-data with the image in field "file", or JSON {"pixels": ...}'
    )


async def _json_object(request: Request, key: str) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPException(400, "the request body is not valid JSON") from None
    if not isinstance(body, dict) or key not in body:
        raise HTTPException(422, f'the JSON body must be an object with a "{key}" key')
    return body


async def _uploads(request: Request, field: str, max_bytes: int, limit: int) -> list[bytes]:
    """The uploaded files' bytes (field `field`, else any file fields), each size-checked."""
    async with request.form(max_files=limit, max_fields=limit) as form:
        files = [v for v in form.getlist(field) if isinstance(v, UploadFile)]
        files = files or [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise HTTPException(422, f'no image: upload the file in a form field named "{field}"')
        contents = []
        for upload in files:
            if upload.size is not None and upload.size > max_bytes:
                raise HTTPException(413, _too_large(max_bytes))
            contents.append(await upload.read(max_bytes + 1))
            if len(contents[-1]) > max_bytes:
                raise HTTPException(413, _too_large(max_bytes))
    return contents


def _too_large(max_bytes: int) -> str:
    return f"the upload is over the {max_bytes / 2**20:g} MiB limit; send a smaller image"


class BodyLimit:
    """ASGI middleware refusing request bodies over `max_bytes` without reading them whole.

    A declared Content-Length over the limit is answered 413 at once; a chunked body is
    counted as it streams, and the request fails with 413 as soon as it passes the limit.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes + FORM_OVERHEAD
        self.detail = _too_large(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            status, detail = (
                (413, self.detail) if declared.isdigit() else (400, "invalid Content-Length header")
            )
            return await JSONResponse({"detail": detail}, status)(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self.detail)
            return message

        await self.app(scope, counted_receive, send)


def run_server(
    run_ref: str | Path | Run, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"
) -> None:
    """Serve `run_ref` with uvicorn until interrupted; loopback only unless `host` says so."""
    import uvicorn

    uvicorn.run(create_app(run_ref), host=host, port=port, log_level=log_level)
