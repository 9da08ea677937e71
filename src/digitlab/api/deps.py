"""The routes' dependencies (`Depends`): the served run, its `Predictor` and the images a
request carries. The app factory puts one `Predictor` and one `ImageReader` on `app.state`;
these hand them to the routes. They are `async` so that FastAPI calls them on the event
loop, not through its thread pool."""

from __future__ import annotations

import numpy as np
from fastapi import Depends, Request

from digitlab.api.predictor import Predictor
from digitlab.api.uploads import ImageReader
from digitlab.errors import ImageError
from digitlab.runs import Run


async def get_predictor(request: Request) -> Predictor:
    """The app's `Predictor`: the run's model, loaded once."""
    return request.app.state.predictor


async def get_run(predictor: Predictor = Depends(get_predictor)) -> Run:
    """The run served."""
    return predictor.run


async def get_reader(request: Request) -> ImageReader:
    """The app's `ImageReader`: its upload limits and decoding threads."""
    return request.app.state.reader


async def one_image(request: Request, reader: ImageReader = Depends(get_reader)) -> np.ndarray:
    """The request's one image (JSON "pixels" or form field "file"), uint8, the run's shape."""
    return await reader.read_one(request)


async def batch_images(
    request: Request, reader: ImageReader = Depends(get_reader)
) -> list[np.ndarray | ImageError]:
    """The request's 1 to `MAX_BATCH` images (JSON "images" or form fields "files"), each
    an image or the `ImageError` saying why it can't be read."""
    return await reader.read_batch(request)
