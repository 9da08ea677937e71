"""What the API answers and accepts, as OpenAPI sees it: the response models, the one error
model with each status's meaning, and the request body of the routes that take images (FastAPI
can't infer it: `uploads.ImageReader` reads the request itself, to accept JSON or a form)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from digitlab.api.uploads import FIELDS, MAX_BATCH, MAX_REQUEST_PIXELS
from digitlab.data import PIXEL_MAX


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


# A batch answers 200 whenever the request itself is sound, with each bad image refused in
# its own entry (as Elasticsearch's `_bulk` and Google Vision's `images:annotate` do): a 422
# is then about the request, never about one image.
BATCH_422 = (
    'No "images" list (or "files" field), or one of 0 or more than '
    f"{MAX_BATCH} images. A bad image is not a 422 here: it gets its own error entry in the "
    "200 answer."
)


def errors(*codes: int, batch: bool = False) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each error status with its model and meaning (`batch`: as
    `/predict/batch` means it)."""
    meanings = {**ERRORS, 422: BATCH_422} if batch else ERRORS
    return {code: {"model": ErrorDetail, "description": meanings[code]} for code in codes}


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
    prediction_set: list[int] | None = Field(
        description="The classes (digits) that hold the true one with 95% probability, most "
        'probable first: [4, 9] is "4 or 9". Split conformal prediction calibrated on '
        "digits the network did not train on, apart for confident and other answers; the "
        "guarantee is for digits like MNIST's. Null for a run calibrated without sets "
        "(`digitlab calibrate RUN` adds them).",
        examples=[[4, 9]],
    )


class PredictedImage(Prediction):
    """One image of a batch, predicted."""

    index: int = Field(ge=0, description="The image's place in the request, from 0.")


class RefusedImage(BaseModel):
    """One image of a batch that could not be read: its place and why."""

    index: int = Field(ge=0, description="The image's place in the request, from 0.")
    error: str = Field(
        description="Why, in one line: what `/predict` would answer this image alone with (422).",
        examples=["no digit found: the image is blank or its ink is too faint"],
    )


class BatchPrediction(BaseModel):
    """A batch's answers: one entry per image, in the order sent."""

    predictions: list[PredictedImage | RefusedImage] = Field(
        description="A prediction, or for an image that can't be read (broken, blank, bad "
        "pixels) `{index, error}`: one bad image doesn't sink the others."
    )
    failed: int = Field(
        ge=0, description="How many entries are errors; 0 when all are predictions."
    )


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
    value = {"type": "number", "minimum": 0, "maximum": PIXEL_MAX}
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


def request_body(many: bool, shape: tuple[int, int]) -> dict[str, Any]:
    """`openapi_extra=` for a route taking one image (`many=False`) or a batch: a multipart
    upload, or JSON pixels, in `uploads.FIELDS[many]`."""
    files_field, json_field = FIELDS[many]
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
            "description": f"1 to {MAX_BATCH} images, each: {pixels_doc(shape)} An image that "
            "breaks these rules is not a 422: it is refused in its own entry of the answer.",
        }

    def body(field: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"schema": {"type": "object", "properties": {field: schema}, "required": [field]}}

    content = {
        "multipart/form-data": body(files_field, upload),
        "application/json": body(json_field, pixels),
    }
    return {"requestBody": {"required": True, "content": content}}
