"""The model's description and its test digits: `/model`, `/health`, `/random-test-digit`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query
from starlette.concurrency import run_in_threadpool

from digitlab.api.deps import get_predictor, get_run
from digitlab.api.predictor import Predictor
from digitlab.api.schemas import ModelInfo, SampleDigit, errors
from digitlab.errors import DigitlabError, ImageError
from digitlab.runs import Run


async def model_info(
    run: Run = Depends(get_run), predictor: Predictor = Depends(get_predictor)
) -> ModelInfo:
    """Which run is served: its preset, dataset, test accuracy and size."""
    return ModelInfo(
        run=run.name,
        preset=run.spec.name,
        dataset=run.dataset.name,
        test_accuracy=run.metrics.test_accuracy,
        parameters=run.model.count_params(),
        class_names=predictor.class_names,
    )


async def health(run: Run = Depends(get_run)) -> dict[str, str]:
    """Liveness: answers once the model is loaded."""
    return {"status": "ok", "run": run.name}


async def sample_digit(predictor: Predictor, index: int | None) -> SampleDigit:
    """`Predictor.test_digit` off the event loop (the test set loads on first use); 503 when
    the run's test set cannot be loaded."""
    try:
        return await run_in_threadpool(predictor.test_digit, index)
    except DigitlabError as exc:
        if isinstance(exc, ImageError):
            raise
        raise HTTPException(503, f"the test set is unavailable: {exc}") from None


def router(run: Run) -> APIRouter:
    """The model's routes; `/random-test-digit`'s `index` is bounded by `run`'s test set."""
    routes = APIRouter()
    test_samples = run.dataset.test_samples
    last = test_samples - 1 if isinstance(test_samples, int) and test_samples > 0 else None

    # defined here, not at the top: the bound on `index` in its signature is the run's own
    async def random_test_digit(
        index: int | None = Query(None, ge=0, le=last, description="Which test digit."),
        predictor: Predictor = Depends(get_predictor),
    ) -> SampleDigit:
        """A real digit from the run's test set (random, or `index`) and its prediction."""
        return await sample_digit(predictor, index)

    routes.add_api_route(
        "/random-test-digit", random_test_digit, methods=["GET"], responses=errors(422, 503)
    )
    routes.add_api_route("/model", model_info, methods=["GET"])
    routes.add_api_route("/health", health, methods=["GET"])
    return routes
