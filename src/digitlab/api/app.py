"""The app factory: `create_app(run)` builds the API and drawing page around one run.

The run's model is loaded once, in the app's lifespan, and warmed with one prediction so the
first request doesn't pay for loading it; the explanation compiles in the background. Every
request is checked at this edge: a body over the size limit, a broken or huge image, an empty
canvas or bad pixel values get a 4xx with `{"detail": "..."}`, never a 500. Every answer,
errors included, is declared with its model in the OpenAPI schema (`/openapi.json`), and
`tests/test_api_schema.py` holds the app to it.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.concurrency import run_in_threadpool

from digitlab.api.predictor import Predictor
from digitlab.api.routes import model, page, predict
from digitlab.api.uploads import BodyLimit, ImageReader
from digitlab.errors import DigitlabError
from digitlab.preprocess import MAX_BYTES
from digitlab.runs import Run, load_run


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
    predictor = Predictor(run)
    # FastAPIOffline serves the /docs assets itself: plain FastAPI fetches them from a CDN.
    app = FastAPIOffline(
        title="digitlab",
        summary=f"Handwritten digit recognition with run {run.name}",
        lifespan=lifespan,
    )
    app.state.predictor = predictor  # for the routes, through `deps`
    app.state.reader = ImageReader(predictor.shape, max_upload_bytes)
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)
    app.add_exception_handler(DigitlabError, unprocessable)
    app.add_exception_handler(RequestValidationError, invalid_parameter)
    app.include_router(predict.router(predictor.shape))
    app.include_router(model.router(run))
    app.include_router(page.router)
    app.mount("/static", page.static_files(), name="static")
    return app


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Load the model before the first request is taken (`Predictor.warm`)."""
    await run_in_threadpool(app.state.predictor.warm)
    yield


async def unprocessable(request: Request, exc: DigitlabError) -> JSONResponse:
    """A `DigitlabError` (a bad image, bad pixels) is the client's: 422 with its one line."""
    return JSONResponse({"detail": str(exc)}, status_code=422)


async def invalid_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
    """A bad query parameter: 422 with one line, `query.index: Input should be ...`."""
    problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    return JSONResponse({"detail": "; ".join(problems)}, status_code=422)
