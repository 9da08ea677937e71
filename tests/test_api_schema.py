"""The HTTP API keeps the promises of its own OpenAPI schema (`/openapi.json`).

Schemathesis reads the schema from the app in-process, generates valid and invalid requests
for every operation (examples, coverage and fuzzing phases) and runs every check it has,
as `schemathesis run --checks all` would: no 500s, only declared status codes, bodies that
match the declared models, valid data accepted, invalid data refused. The number of
examples is bounded so the whole file takes seconds, not minutes.
"""

from __future__ import annotations

import pytest
import schemathesis
import schemathesis.engine
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, StopReason, events
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from digitlab.api import create_app

pytestmark = pytest.mark.slow  # serves the trained run

CONFIG = """
[generation]
mode = "all"  # positive and negative
max-examples = 25  # per operation and phase: seconds, not minutes
deterministic = true

[[operations]]
# The coverage phase tries to draw a maximal batch, 64 images of 784 numbers, more than
# Hypothesis can draw, and spends 80 s failing; the fuzzing phase covers this operation, and
# the coverage phase covers /predict, whose pixel schema is the same.
include-name = "POST /predict/batch"
phases.coverage.enabled = false
"""


@schemathesis.check
def digit_data_acceptance(ctx, response, case):
    """`positive_data_acceptance`, less one documented exception: a schema-valid upload that
    is refused with 422. OpenAPI can say "a binary file" but not "an image of a digit", so the
    random bytes or 1×1 PNGs schemathesis uploads are rightly "not a supported image" or "no
    digit found". JSON pixels get no such leeway: their schema says exactly what is accepted.
    """
    if case.media_type == "multipart/form-data" and response.status_code == 422:
        return None
    return positive_data_acceptance(ctx, response, case)


@schemathesis.check
def batch_negative_data_rejection(ctx, response, case):
    """`negative_data_rejection`, less one documented exception: in `/predict/batch`, an
    image that breaks the pixel schema inside a sound request is not a 4xx. The batch is
    answered 200 and that image refused in its own entry (`failed` counts them), as the
    schema's description says: one bad image doesn't sink the others."""
    if (
        case.operation.label == "POST /predict/batch"
        and response.status_code == 200
        and response.json().get("failed", 0) > 0
    ):
        return None
    return negative_data_rejection(ctx, response, case)


def test_every_operation_keeps_its_schema(trained_run):
    config = SchemathesisConfig.from_str(CONFIG)
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(trained_run), config=config)
    schema.config.checks.update(  # `--checks all`, with the two checks above in place of
        included_check_names=["all"],  # the stock ones they relax
        excluded_check_names=["positive_data_acceptance", "negative_data_rejection"],
    )
    problems = []
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            problems += [
                f"{event.recorder.label}: {check.failure_info.failure.title}\n"
                f"{check.failure_info.failure.message}\n{check.failure_info.code_sample}"
                for checks in event.recorder.checks.values()
                for check in checks
                if check.status == Status.FAILURE and check.failure_info is not None
            ]
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"error: {event!r}")
        elif isinstance(event, events.EngineFinished):
            problems += [f"{f.operation}: {f.title}\n{f.message}" for f in event.failures]
            assert event.stop_reason == StopReason.COMPLETED, event.stop_reason
    assert not problems, "\n\n".join(dict.fromkeys(problems))
