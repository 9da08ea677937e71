"""The drawing page words the server's confidence verdict (issue 12), in a real Chromium."""

from __future__ import annotations

import math

import pytest
from test_web import base_url, draw_strokes, page  # noqa: F401  (fixtures; browser: conftest)

from digitlab import confidence

pytestmark = [pytest.mark.browser, pytest.mark.slow]
MESSAGES = {"not a digit": "Not a digit?", "unsure": "Unsure:", None: "Confident:"}


def circle(cx=140, cy=140, r=90, n=24):
    return [
        (cx + r * math.cos(2 * math.pi * i / n), cy + r * math.sin(2 * math.pi * i / n))
        for i in range(n + 1)
    ]


def draw_circle(page):  # noqa: F811
    """Draw a circle; the JSON of every answer the server gave while it was drawn."""
    answers = []
    page.on(
        "response",
        lambda r: answers.append(r) if r.url.endswith(("/predict", "/explain")) else None,
    )
    draw_strokes(page, [circle()])
    page.wait_for_function("document.getElementById('digit').textContent !== '–'")
    page.wait_for_load_state("networkidle")
    page.wait_for_timeout(300)
    return [answer.json() for answer in answers]


def test_a_circle_shows_the_verdict_the_server_gave(page):  # noqa: F811
    last = draw_circle(page)[-1]
    assert isinstance(last["confident"], bool)  # the served run is calibrated at training
    words = page.locator("#verdict-words")
    assert words.is_visible()
    assert words.text_content().startswith(MESSAGES[None if last["confident"] else last["reason"]])
    doubtful = "doubtful" in page.locator("#digit").get_attribute("class").split()
    assert doubtful == (not last["confident"])


def test_a_flagged_drawing_says_it_does_not_look_like_a_digit(page, monkeypatch):  # noqa: F811
    real = confidence.judge

    def flag_everything(probabilities, thresholds, residual=None):
        value, _, _ = real(probabilities, thresholds, residual)
        return value, value < 0, ["not a digit"] * len(value)

    monkeypatch.setattr(confidence, "judge", flag_everything)  # the server is in-process
    draw_circle(page)
    page.wait_for_selector("#verdict-words:has-text('Not a digit?')")
    assert page.locator("#set").text_content().startswith("If it is a digit at all, it is ")
    page.click("#clear")
    assert page.locator("#verdict-words").is_hidden()
