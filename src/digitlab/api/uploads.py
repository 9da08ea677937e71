"""Reading a request's images: the one place an upload or JSON pixels become uint8 images.

Every route that takes images (`/predict`, `/predict/batch`, `/explain`) reads them with
`ImageReader.read_one` or `read_batch`: JSON pixels (`{"pixels": ...}`, or `{"images": [...]}`
for a batch) or a multipart form (field "file", or "files"). In a batch each image is read on
its own: a bad one becomes its `ImageError`, in its place, and the others are still read. The
limits are checked here, at the edge:

- `BodyLimit` refuses a body over the upload limit (plus form overhead) before it is read whole;
- each uploaded file is at most `max_upload_bytes`, a batch at most `MAX_BATCH` images, and one
  request at most `MAX_REQUEST_PIXELS` pixels in all, read from the headers before decoding;
- uploads are decoded on the event loop when they are small in pixels, else in a thread (at
  most `DECODE_THREADS` at once), so a 79 KB PNG of 4096×4096 pixels never stalls the server.

Pixels sent as JSON follow the library's one rule (`prediction.to_pixels`): integers are 0–255,
floats all within 0–1 are scaled by 255, other floats are 0–255. An image whose pixels are all
0 is blank: "no digit found" (422), the same answer as an empty canvas upload.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from typing import Any

import anyio
import numpy as np
from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from PIL import Image
from starlette.datastructures import UploadFile

from digitlab.data import IMAGE_SHAPE
from digitlab.errors import DigitlabError, ImageError
from digitlab.prediction import to_pixels
from digitlab.preprocess import FORMATS, MAX_PIXELS, load_image, no_digit_error, preprocess
from digitlab.runs import Run

MAX_BATCH = 64  # images per /predict/batch request
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers, on top of the image itself
MAX_FORM_FIELDS = 1000  # text fields beside the files, ignored (Starlette's default)
INLINE_PIXELS = 512 * 512  # uploads up to this many pixels in all decode on the event loop
MAX_REQUEST_PIXELS = 2 * MAX_PIXELS  # pixels in all per request: two 4096×4096 photos, ~1 s
DECODE_THREADS = min(4, os.cpu_count() or 1)  # larger uploads decoding at once; more wait

# (multipart field, JSON key) for one image (False) and for a batch (True)
FIELDS = {False: ("file", "pixels"), True: ("files", "images")}


def image_shape(run: Run | None = None) -> tuple[int, int]:
    """The served images' rows × columns: the run's own (`Run.image_shape`), else the default
    dataset's (`data.IMAGE_SHAPE`). The one place the API's pixel shape comes from."""
    return tuple(getattr(run, "image_shape", None) or IMAGE_SHAPE)


class ImageReader:
    """Reads the images of a request, for a run whose images are `shape`.

    Args:
        shape: rows × columns the model reads.
        max_upload_bytes: largest image file accepted.
    """

    def __init__(self, shape: tuple[int, int], max_upload_bytes: int):
        self.shape = shape
        self.max_upload_bytes = max_upload_bytes
        self.decodes = anyio.CapacityLimiter(DECODE_THREADS)

    async def read_one(self, request: Request) -> np.ndarray:
        """The request's one image (JSON "pixels" or form field "file"), uint8 `shape`.

        Raises:
            HTTPException: as `read_batch`.
            ImageError: the image is broken, too large, holds no digit, or has bad pixels.
        """
        (image,) = await self._read(request, many=False)
        if isinstance(image, ImageError):
            raise image
        return image

    async def read_batch(self, request: Request) -> list[np.ndarray | ImageError]:
        """The request's 1 to `MAX_BATCH` images (JSON "images" or form fields "files"), in
        order: each a uint8 `shape` image, or the `ImageError` saying why it can't be read
        (broken, too large, no digit, bad pixels), so one bad image doesn't sink the rest.

        Raises:
            HTTPException: 415 neither JSON nor a form; 400 unreadable JSON; 413 over a limit;
                422 a missing field or a batch of the wrong length.
        """
        return await self._read(request, many=True)

    async def _read(self, request: Request, many: bool) -> list[np.ndarray | ImageError]:
        files_field, json_field = FIELDS[many]
        if _is_json(request):
            body = await _json_object(request, json_field)
            return self._pixel_images(body[json_field], many)
        limit = MAX_BATCH if many else 1
        files = await _form_files(request, files_field, self.max_upload_bytes, limit)
        return await self.decode_uploads(files)

    def _pixel_images(self, value: Any, many: bool) -> list[np.ndarray | ImageError]:
        """JSON pixels (decoded on the event loop: they skip preprocessing) as images."""
        if many and (not isinstance(value, list) or not 1 <= len(value) <= MAX_BATCH):
            raise HTTPException(422, f'"images" must be a list of 1 to {MAX_BATCH} images')
        images = value if many else [value]
        return [_or_error(pixels_to_image, pixels, shape=self.shape) for pixels in images]

    async def decode_uploads(self, files: list[bytes]) -> list[np.ndarray | ImageError]:
        """Decode and preprocess uploads: on the event loop when they are small in pixels, else in
        a thread, at most `DECODE_THREADS` at once.

        The decision reads each image's header (no pixel decoded): a canvas PNG (280×280)
        takes ~3 ms, less than a trip through the thread pool; a 79 KB PNG of 4096×4096
        pixels takes seconds, whatever its byte size, and would stall every other request.

        Returns:
            Each upload as `decode_files` returns it: its image, or why it can't be read.

        Raises:
            HTTPException: 413, the images hold more than `MAX_REQUEST_PIXELS` in all.
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

    def decode_files(self, files: list[bytes]) -> list[np.ndarray | ImageError]:
        """Decode and preprocess image files: each one's image, or the `ImageError` saying
        why it can't be (broken, too large, no digit)."""
        return [_or_error(self._decode_file, data) for data in files]

    def _decode_file(self, data: bytes) -> np.ndarray:
        return preprocess(load_image(data, max_bytes=self.max_upload_bytes), self.shape)


def _or_error(read, *args, **kwargs) -> np.ndarray | ImageError:
    """`read(*args, **kwargs)`, or the `ImageError` it raised: one image's answer in a batch."""
    try:
        return read(*args, **kwargs)
    except ImageError as exc:
        return exc


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


def pixels_to_image(pixels: Any, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Validate one image's JSON pixels (784 numbers or 28 rows of 28) into a uint8 28×28.

    Values follow `prediction.to_pixels`, the rule the library and the CLI use: integers are
    0–255; floats all within 0–1 are scaled by 255 (0.8 → 204); other floats are 0–255.
    Pixels that are all 0 are a blank image, refused like an empty canvas upload.

    Args:
        pixels: the decoded JSON value.
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
        raise ImageError("pixel values must be between 0 and 255 (white digit on black)")
    if array.dtype.kind not in "iuf" or array.shape not in shapes:
        got = f"shape {array.shape}" if array.dtype.kind in "iuf" else "something else"
    elif _has_booleans(pixels):  # numpy reads [true, 0] as [1, 0]; JSON says it isn't a number
        got = "true or false among them"
    else:
        got = None
    if got is not None:
        raise ImageError(
            f"pixels must be {rows * cols} numbers or {rows} rows of {cols} numbers; got {got}"
        )
    try:
        image = to_pixels(array).reshape(rows, cols)
    except DigitlabError as exc:
        raise ImageError(f"{exc} (white digit on black)") from None
    if not array.any():
        raise no_digit_error()
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


async def _form_files(request: Request, field: str, max_bytes: int, limit: int) -> list[bytes]:
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
