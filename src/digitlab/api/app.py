"""The HTTP API and the drawing page: `create_app(run)` builds a FastAPI app around one run.

The run's model is loaded once, in the app's lifespan, and warmed with one prediction so the
first request doesn't pay for compilation. Every request is checked at this edge: a body over
the size limit, a broken or huge image, an empty canvas or bad pixel values get a 4xx with
`{"detail": "..."}`, never a 500. Every answer, errors included, is declared with its model in
the OpenAPI schema (`/openapi.json`), and `tests/test_api_schema.py` holds the app to it.

Pixels sent as JSON follow the library's one rule (`prediction.to_pixels`): integers are 0–255,
floats all within 0–1 are scaled by 255, other floats are 0–255. An image whose pixels are all
0 is blank: "no digit found" (422), the same answer as an empty canvas upload.

Uploads are decoded in a thread (at most `DECODE_THREADS` at once) unless they are small in
pixels, so a 79 KB PNG of 4096×4096 pixels never stalls the event loop, and one request may hold
at most `MAX_REQUEST_PIXELS` pixels in all.

    POST /predict          one image (multipart field "file") or JSON {"pixels": ...}
    POST /predict/batch    many images (multipart fields "files") or JSON {"images": [...]}
    POST /explain          as /predict, plus each layer's activations and a saliency map
    GET  /random-test-digit   a real test-set digit and the model's prediction for it
    GET  /model, /health, /docs, and / (the drawing page, from static/)
"""

from __future__ import annotations

import base64
import errno
import io
import json
import os
import random
import socket
import warnings
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from digitlab.confidence import verdicts
from digitlab.errors import DigitlabError, ImageError
from digitlab.prediction import to_pixels
from digitlab.preprocess import (
    FORMATS,
    MAX_BYTES,
    MAX_PIXELS,
    load_image,
    no_digit_error,
    preprocess,
    to_png,
)
from digitlab.runs import Run, load_run

STATIC_DIR = Path(__file__).parent / "static"
MAX_BATCH = 64  # images per /predict/batch request
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers, on top of the image itself
MAX_FORM_FIELDS = 1000  # text fields beside the files, ignored (Starlette's default)
INLINE_PIXELS = 512 * 512  # uploads up to this many pixels in all decode on the event loop
MAX_REQUEST_PIXELS = 2 * MAX_PIXELS  # pixels in all per request: two 4096×4096 photos, ~1 s
DECODE_THREADS = min(4, os.cpu_count() or 1)  # larger uploads decoding at once; more wait


def image_shape(run: Run | None = None) -> tuple[int, int]:
    """The served images' rows × columns: the run's own (`Run.image_shape`) once runs carry
    it, else MNIST's 28×28. The one place the API's pixel shape comes from."""
    return tuple(getattr(run, "image_shape", None) or (28, 28))


class ErrorDetail(BaseModel):
    """Every 4xx/5xx answer: one line saying what is wrong and what to do."""

    detail: str = Field(examples=["no digit found: the image is blank or its ink is too faint"])


ERRORS = {
    400: "Malformed request: not JSON (or nested too deeply, or a number of thousands of "
    "digits), a broken multipart form, or a bad Content-Length.",
    413: "The body is over the upload limit (5 MiB by default), or the images hold more than "
    f"{MAX_REQUEST_PIXELS:,} pixels in all.",
    415: "The body is neither multipart/form-data nor application/json.",
    422: "Not an image, a truncated one, one over 4096×4096 pixels, no digit found (a blank "
    "canvas or all-0 pixels), wrong pixel count or values, or a bad parameter.",
    503: "The run's test set cannot be loaded.",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each error status with its model and meaning."""
    return {code: {"model": ErrorDetail, "description": ERRORS[code]} for code in codes}


class Prediction(BaseModel):
    digit: int
    label: str
    probabilities: list[float]
    preprocessed: str  # base64 PNG of the 28×28 the model saw, white digit on black
    confidence: float = Field(ge=0, le=1, description="The top class probability.")
    confident: bool | None = Field(
        description="False when the answer should not be trusted (see `reason`); null for a "
        "run without calibrated thresholds (`digitlab calibrate RUN` adds them)."
    )
    reason: Literal["unsure", "not a digit"] | None = Field(
        description='Why not confident: "unsure" (two classes close) or "not a digit" (far '
        "from every training digit); null when confident or uncalibrated."
    )


class BatchPrediction(BaseModel):
    predictions: list[Prediction]


class SampleDigit(Prediction):
    index: int
    expected: int


class TopClass(BaseModel):
    digit: int
    label: str
    probability: float


class LayerActivation(BaseModel):
    """One layer's outputs for the digit: `values` (a Dense layer, one per unit) or `maps`
    (a conv layer: the 8 most active feature maps, downsampled to at most 14×14, with
    their `channels`)."""

    name: str
    type: str
    activation: str
    shape: list[int]
    values: list[float] | None = None
    maps: list[list[list[float]]] | None = None
    channels: list[int] | None = None


class Explanation(Prediction):
    """A prediction, and why: the top 3, each layer's activations and a saliency map."""

    top3: list[TopClass]
    target: int  # the class explained: the predicted one
    method: str  # how the saliency was computed: "integrated" gradients
    saliency: str  # base64 PNG, 28×28 RGBA overlay: red for the class, blue against it
    layers: list[LayerActivation]


class ModelInfo(BaseModel):
    run: str
    preset: str | None
    dataset: str | None
    test_accuracy: float | None
    parameters: int
    class_names: list[str]


def pixels_doc(shape: tuple[int, int]) -> str:
    rows, cols = shape
    return (
        f"{rows * cols} numbers, or {rows} rows of {cols}, MNIST-style: white digit on black, "
        f"already {rows}×{cols} and centred; they skip preprocessing. Whole numbers are "
        "0–255; if any value has a decimal point (0.8, 1.0) and all lie within 0–1, they are "
        "the notebook's x / 255 and are scaled by 255 (0.8 → 204); otherwise they are 0–255. "
        'All 0 is a blank image: 422, "no digit found", as for an empty canvas.'
    )


def _pixels_schema(shape: tuple[int, int]) -> dict[str, Any]:
    """One image's JSON pixels: flat or in rows, 0–255, and not all 0 (blank)."""
    rows, cols = shape
    value = {"type": "number", "minimum": 0, "maximum": 255}
    ink = {"type": "number", "exclusiveMinimum": 0}
    row = {"type": "array", "items": value, "minItems": cols, "maxItems": cols}
    n = rows * cols
    flat = {"type": "array", "items": value, "minItems": n, "maxItems": n, "contains": ink}
    grid = {
        "type": "array",
        "items": row,
        "minItems": rows,
        "maxItems": rows,
        "contains": {"contains": ink},
    }
    return {"anyOf": [flat, grid]}


def _request_body(
    files_field: str, json_field: str, many: bool, shape: tuple[int, int]
) -> dict[str, Any]:
    """OpenAPI for a body that is a multipart upload or JSON pixels (FastAPI can't infer it:
    the endpoints read the request themselves to accept either)."""
    file = {"type": "string", "format": "binary", "description": "a PNG, JPEG, BMP, GIF or WebP"}
    upload = (
        {"type": "array", "items": file, "minItems": 1, "maxItems": MAX_BATCH} if many else file
    )
    pixels = {**_pixels_schema(shape), "description": pixels_doc(shape)}
    if many:
        pixels = {
            "type": "array",
            "items": pixels,
            "minItems": 1,
            "maxItems": MAX_BATCH,
            "description": f"1 to {MAX_BATCH} images, each: {pixels_doc(shape)}",
        }

    def body(field: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"schema": {"type": "object", "properties": {field: schema}, "required": [field]}}

    content = {
        "multipart/form-data": body(files_field, upload),
        "application/json": body(json_field, pixels),
    }
    return {"requestBody": {"required": True, "content": content}}


class Predictor:
    """The run's model and test set, loaded once, and the predictions the endpoints return."""

    def __init__(self, run: Run, max_upload_bytes: int):
        self.run = run
        self.class_names = run.class_names
        self.shape = image_shape(run)
        self.max_upload_bytes = max_upload_bytes
        self.decodes = anyio.CapacityLimiter(DECODE_THREADS)
        self._test_set: tuple[np.ndarray, np.ndarray] | None = None

    def warm(self) -> None:
        """Load the model and compile its one-image prediction and explanation."""
        from digitlab.insight import explain

        blank = np.zeros((1, *self.shape), np.uint8)
        self.probabilities(blank)
        explain(self.run, blank[0])

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """Class probabilities for uint8 N×28×28. `Run.predict_proba` pads each batch to a
        power of two, so JAX compiles a handful of shapes, not one per batch size."""
        return self.run.predict_proba(images)

    def predict(self, images: list[np.ndarray]) -> list[Prediction]:
        batch = np.stack(images)
        probabilities = self.probabilities(batch)
        judged = verdicts(self.run, batch, probabilities)  # the library's one verdict
        return [
            self._prediction(x, p, v) for x, p, v in zip(images, probabilities, judged, strict=True)
        ]

    def explain(self, image: np.ndarray) -> Explanation:
        """The prediction of one uint8 28×28 image, with `insight.explain`'s why."""
        from digitlab.insight import explain, saliency_base64

        prediction = self.predict([image])[0]
        why = explain(self.run, image)
        return Explanation(
            **prediction.model_dump(),
            top3=why["top3"],
            target=why["target"],
            method=why["method"],
            saliency=saliency_base64(np.asarray(why["saliency"])),
            layers=why["layers"],
        )

    def predict_files(self, files: list[bytes]) -> list[Prediction]:
        return self.predict(self.decode_files(files))

    def decode_files(self, files: list[bytes]) -> list[np.ndarray]:
        images = []
        for i, data in enumerate(files):
            try:
                image = load_image(data, max_bytes=self.max_upload_bytes)
                images.append(preprocess(image, self.shape))
            except ImageError as exc:
                raise ImageError(f"image {i + 1}: {exc}" if len(files) > 1 else str(exc)) from None
        return images

    async def predict_uploads(self, files: list[bytes]) -> list[Prediction]:
        """`decode_uploads`, then predict."""
        return self.predict(await self.decode_uploads(files))

    async def decode_uploads(self, files: list[bytes]) -> list[np.ndarray]:
        """Decode and preprocess uploads: on the event loop when they are small in pixels, else in
        a thread, at most `DECODE_THREADS` at once.

        The decision reads each image's header (no pixel decoded): a canvas PNG (280×280)
        takes ~3 ms, less than a trip through the thread pool; a 79 KB PNG of 4096×4096
        pixels takes seconds, whatever its byte size, and would stall every other request.

        Raises:
            HTTPException: 413, the images hold more than `MAX_REQUEST_PIXELS` in all.
            ImageError: an image is broken, too large, or holds no digit.
        """
        pixels = sum(_pixel_count(data) for data in files)
        if pixels > MAX_REQUEST_PIXELS:
            raise HTTPException(
                413,
                f"the images hold {pixels:,} pixels in all, over the limit of "
                f"{MAX_REQUEST_PIXELS:,} per request; send fewer or smaller images",
            )
        if pixels <= INLINE_PIXELS:
            return self.decode_files(files)
        return await anyio.to_thread.run_sync(self.decode_files, files, limiter=self.decodes)

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

    shape = model.shape
    upload_errors = _errors(400, 413, 415, 422)

    @app.post(
        "/predict",
        responses=upload_errors,
        openapi_extra=_request_body("file", "pixels", many=False, shape=shape),
    )
    async def predict(request: Request) -> Prediction:
        """Predict one digit: an image file of any size, or 28×28 MNIST-style pixels."""
        if _is_json(request):
            body = await _json_object(request, "pixels")
            return model.predict([pixels_to_image(body["pixels"], shape=shape)])[0]  # inline
        files = await _uploads(request, "file", model.max_upload_bytes, limit=1)
        return (await model.predict_uploads(files))[0]

    @app.post(
        "/explain",
        responses=upload_errors,
        openapi_extra=_request_body("file", "pixels", many=False, shape=shape),
    )
    async def explain(request: Request) -> Explanation:
        """Predict one digit and show why: the same inputs and errors as `/predict`, plus the
        top 3, each layer's activations and a saliency map (integrated gradients)."""
        if _is_json(request):
            body = await _json_object(request, "pixels")
            image = pixels_to_image(body["pixels"], shape=shape)
        else:
            files = await _uploads(request, "file", model.max_upload_bytes, limit=1)
            image = (await model.decode_uploads(files))[0]
        return model.explain(image)

    @app.post(
        "/predict/batch",
        responses=upload_errors,
        openapi_extra=_request_body("files", "images", many=True, shape=shape),
    )
    async def predict_batch(request: Request) -> BatchPrediction:
        """Predict up to 64 digits in one request: image files, or MNIST-style pixel arrays."""
        if _is_json(request):
            body = await _json_object(request, "images")
            images = body["images"]
            if not isinstance(images, list) or not 1 <= len(images) <= MAX_BATCH:
                raise HTTPException(422, f'"images" must be a list of 1 to {MAX_BATCH} images')
            arrays = [
                pixels_to_image(x, f"image {i + 1}: ", shape=shape) for i, x in enumerate(images)
            ]
            return BatchPrediction(predictions=model.predict(arrays))
        files = await _uploads(request, "files", model.max_upload_bytes, limit=MAX_BATCH)
        return BatchPrediction(predictions=await model.predict_uploads(files))

    test_samples = run.dataset.test_samples
    last = test_samples - 1 if isinstance(test_samples, int) and test_samples > 0 else None

    @app.get("/random-test-digit", responses=_errors(422, 503))
    async def random_test_digit(
        index: int | None = Query(None, ge=0, le=last, description="Which test digit."),
    ) -> SampleDigit:
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
            preset=run.spec.name,
            dataset=run.dataset.name,
            test_accuracy=run.metrics.test_accuracy,
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


def _pixel_count(data: bytes) -> int:
    """An upload's width × height, read from its header without decoding a pixel; 0 when the
    header is unreadable or over the per-image limit (`load_image` refuses those itself,
    before decoding, with its own message)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as image:
                width, height = image.size
    except Exception:  # Pillow's parsers raise many types on malformed headers
        return 0
    return width * height if width * height <= MAX_PIXELS else 0


def pixels_to_image(
    pixels: Any, where: str = "", shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Validate one image's JSON pixels (784 numbers or 28 rows of 28) into a uint8 28×28.

    Values follow `prediction.to_pixels`, the rule the library and the CLI use: integers are
    0–255; floats all within 0–1 are scaled by 255 (0.8 → 204); other floats are 0–255.
    Pixels that are all 0 are a blank image, refused like an empty canvas upload.

    Args:
        pixels: the decoded JSON value.
        where: prefix for the message ("image 3: " in a batch).
        shape: rows × columns, default `image_shape()`.

    Raises:
        ImageError: wrong count or shape, not numbers, values out of range, or blank.
    """
    rows, cols = shape or image_shape()
    try:
        array = np.asarray(pixels)
    except (ValueError, TypeError, RecursionError):  # ragged rows, nesting past numpy's 64
        array = np.asarray(None)
    shapes = {(rows * cols,), (rows, cols)}
    if array.dtype == object and array.shape in shapes and _whole_numbers(array.flat):
        raise ImageError(f"{where}pixel values must be between 0 and 255 (white digit on black)")
    if array.dtype.kind not in "iuf" or array.shape not in shapes:
        got = f"shape {array.shape}" if array.dtype.kind in "iuf" else "something else"
    elif _has_booleans(pixels):  # numpy reads [true, 0] as [1, 0]; JSON says it isn't a number
        got = "true or false among them"
    else:
        got = None
    if got is not None:
        raise ImageError(
            f"{where}pixels must be {rows * cols} numbers or {rows} rows of {cols} numbers; "
            f"got {got}"
        )
    try:
        image = to_pixels(array).reshape(rows, cols)
    except DigitlabError as exc:
        raise ImageError(f"{where}{exc} (white digit on black)") from None
    if not array.any():
        raise ImageError(f"{where}{no_digit_error()}")
    return image


def _whole_numbers(values) -> bool:
    """Whether all are Python ints (numpy keeps ints past 64 bits as objects), not bools."""
    return all(isinstance(value, int) and not isinstance(value, bool) for value in values)


def _has_booleans(pixels: Any) -> bool:
    """Whether a list of numbers, or of rows of numbers, holds a True or False."""
    if not isinstance(pixels, list):
        return False
    rows = pixels if pixels and isinstance(pixels[0], list) else [pixels]
    return any(isinstance(value, bool) for row in rows for value in row)


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
    """The JSON body, an object with `key`; 400 for what `json.loads` can't read."""
    body = await request.body()
    try:
        body = json.loads(body)
    except RecursionError:
        raise HTTPException(400, "the JSON is nested too deeply; send flat lists") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HTTPException(400, "the request body is not valid JSON") from None
    except ValueError:  # an integer of more than 4300 digits (sys.get_int_max_str_digits)
        raise HTTPException(
            400, "the JSON holds a number too long to read; pixels are 0–255"
        ) from None
    if not isinstance(body, dict) or key not in body:
        raise HTTPException(422, f'the JSON body must be an object with a "{key}" key')
    return body


async def _uploads(request: Request, field: str, max_bytes: int, limit: int) -> list[bytes]:
    """The uploaded files' bytes (field `field`, else any file fields), each size-checked."""
    async with request.form(max_files=limit, max_fields=MAX_FORM_FIELDS) as form:
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


def check_port(port: int) -> int:
    """`port` if it is a TCP port, 1–65535 (0, "any free port", is not offered).

    Raises:
        DigitlabError: out of range; uvicorn would otherwise bind another port or fail later.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise DigitlabError(f"--port must be a TCP port between 1 and 65535, got {port}")
    return port


def _bound(host: str, port: int) -> socket.socket | None:
    """A TCP socket bound to (host, port), or None when the port is in use."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise DigitlabError(
            f"--host {host} is not an address here ({reason}); e.g. 127.0.0.1"
        ) from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is fine
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            return None
        raise DigitlabError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def bind_port(host: str, port: int) -> socket.socket:
    """Bind (host, port) before anything is served, so a taken port is one clear line.

    Raises:
        DigitlabError: `port` is not 1–65535, the port is in use (the message names a free
            one nearby: `port 8000 is in use; try --port 8001`), or the address is unusable.
    """
    check_port(port)
    sock = _bound(host, port)
    if sock is not None:
        return sock
    for other in range(port + 1, min(port + 100, 65535) + 1):
        probe = _bound(host, other)
        if probe is not None:
            probe.close()
            raise DigitlabError(f"port {port} is in use; try --port {other}")
    raise DigitlabError(f"port {port} is in use; try another --port")


def run_server(
    run_ref: str | Path | Run,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    on_listening: Callable[[str], Any] | None = None,
) -> None:
    """Serve `run_ref` with uvicorn until interrupted; loopback only unless `host` says so.

    The port is bound first (`bind_port`); `on_listening(url)` is called once it is, before
    serving, so nothing announces a server that could not start.

    Raises:
        DigitlabError: `port` is not 1–65535 or is in use (checked before anything is loaded).
    """
    import uvicorn

    sock = bind_port(host, port)
    try:
        app = create_app(run_ref)
        if on_listening is not None:
            shown = f"[{host}]" if ":" in host else host
            on_listening(f"http://{shown}:{port}")
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
