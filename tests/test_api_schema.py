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
from schemathesis.engine import Status, StopReason, events

from digitlab.serve import create_app

pytestmark = pytest.mark.slow  # serves the trained run

MAX_EXAMPLES = 25  # per operation and phase


def test_every_operation_keeps_its_schema(trained_run):
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(trained_run))
    schema.config.generation.update(
        modes=["positive", "negative"], max_examples=MAX_EXAMPLES, deterministic=True
    )
    schema.config.checks.update(included_check_names=["all"])  # `--checks all`
    problems = []
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            for case_id, checks in recorder.checks.items():
                problems += [
                    f"{recorder.label}: {check.failure_info.failure.title}\n"
                    f"{check.failure_info.failure.message}\n{check.failure_info.code_sample}"
                    for check in checks
                    if check.status == Status.FAILURE
                    and check.failure_info is not None
                    and not _an_upload_that_is_no_digit(recorder, case_id, check.name)
                ]
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"error: {event!r}")
        elif isinstance(event, events.EngineFinished):
            problems += [f"{f.operation}: {f.title}\n{f.message}" for f in event.failures]
            assert event.stop_reason == StopReason.COMPLETED, event.stop_reason
    assert not problems, "\n\n".join(dict.fromkeys(problems))


def _an_upload_that_is_no_digit(recorder, case_id: str, check: str) -> bool:
    """A schema-valid upload refused with 422: the one documented exception to "valid data
    is accepted". OpenAPI can say "a binary file" but not "an image of a digit", so random
    bytes or a 1×1 PNG that schemathesis uploads are rightly "not a supported image" or
    "no digit found". JSON pixels get no such leeway: their schema says what is accepted."""
    case = recorder.cases[case_id].value
    response = recorder.interactions[case_id].response
    return (
        check == "positive_data_acceptance"
        and case.media_type == "multipart/form-data"
        and response is not None
        and response.status_code == 422
    )
