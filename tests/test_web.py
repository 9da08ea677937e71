"""The drawing page in a real Chromium: draw with the mouse, upload an image, see the answer.

Debian's `chromium` is driven by Playwright's Python client (no browser download). Without
it the tests are skipped, except on CI, where a missing browser is a failure.
"""

from __future__ import annotations

import pytest
from browser import served
from images import draw_digit, encode

from digitlab.api import create_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def base_url(trained_run):
    """The app on a real uvicorn, in a thread of this process, on a free loopback port."""
    with served(create_app(trained_run)) as url:
        yield url


@pytest.fixture
def page(browser, base_url):
    context = browser.new_context(viewport={"width": 1024, "height": 800})
    page = context.new_page()
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(base_url)
    page.wait_for_selector("#model-info:has-text('run ')")
    yield page
    outside = [url for url in requested if not url.startswith((base_url, "data:"))]
    assert not outside, f"the page fetched from elsewhere: {outside}"
    context.close()


def canvas_point(page):
    """Map 280×280 canvas coordinates to the page's (the canvas is scaled by CSS)."""
    box = page.locator("#pad").bounding_box()
    return lambda x, y: (box["x"] + x * box["width"] / 280, box["y"] + y * box["height"] / 280)


def draw_strokes(page, strokes):
    """Drag the mouse along each polyline (in canvas coordinates), one stroke at a time."""
    at = canvas_point(page)
    for stroke in strokes:
        page.mouse.move(*at(*stroke[0]))
        page.mouse.down()
        for point in stroke[1:]:
            page.mouse.move(*at(*point), steps=8)
        page.mouse.up()


def shown_probabilities(page) -> list[float]:
    widths = page.locator("#bars .bar").evaluate_all("bars => bars.map(b => b.style.width)")
    return [float(width.rstrip("%") or 0) / 100 for width in widths]


def test_drawing_a_digit_stroke_by_stroke_shows_its_prediction_and_bars(page):
    at = canvas_point(page)
    page.mouse.move(*at(80, 50))
    page.mouse.down()
    page.mouse.move(*at(200, 50), steps=8)  # the 7's top bar, the button still held:
    page.wait_for_function("document.getElementById('digit').textContent !== '–'")
    page.mouse.up()  # an answer came while drawing, not only after
    draw_strokes(page, [[(200, 50), (150, 140), (115, 240)]])  # then its stem
    page.wait_for_function("document.getElementById('digit').textContent === '7'", timeout=10_000)

    probabilities = shown_probabilities(page)
    assert len(probabilities) == 10
    assert max(probabilities) == probabilities[7] > 0.5
    assert abs(sum(probabilities) - 1) < 0.02
    assert page.locator("#bars li.top").get_attribute("data-digit") == "7"
    assert page.locator("#seen").get_attribute("src").startswith("data:image/png;base64,")

    page.click("#clear")
    assert page.locator("#digit").text_content() == "–"
    assert shown_probabilities(page) == [0.0] * 10


def test_uploading_an_image_shows_its_prediction(page, tmp_path):
    path = tmp_path / "my-three.jpg"
    path.write_bytes(encode(draw_digit(3, width=10).convert("RGB"), "JPEG", quality=80))
    page.set_input_files("#upload", str(path))
    page.wait_for_function("document.getElementById('digit').textContent === '3'", timeout=10_000)
    assert "my-three.jpg" in page.locator("#status").text_content()
    assert page.locator("#bars li.top").get_attribute("data-digit") == "3"


def test_uploading_a_blank_image_explains_the_problem(page, tmp_path):
    path = tmp_path / "blank.png"
    path.write_bytes(encode(draw_digit(3, ink=255)))  # white on white
    page.set_input_files("#upload", str(path))
    page.wait_for_selector("#status.error")
    assert "no digit found" in page.locator("#status").text_content()


def test_a_random_test_digit_is_shown_with_its_label(page):
    page.click("#random")
    page.wait_for_selector("#status:has-text('Test digit #')")
    assert page.locator("#digit").text_content() in [str(d) for d in range(10)]


def test_the_page_fits_a_phone_screen(browser, base_url):
    context = browser.new_context(viewport={"width": 375, "height": 740}, has_touch=True)
    page = context.new_page()
    page.goto(base_url)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375  # no sideways scroll
    box = page.locator("#pad").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 375 and box["width"] >= 250
    context.close()
