"""The HTTP API: every endpoint with the trained notebook network, and every bad input.

Bad input must get a 4xx with a one-line JSON `detail`, never a 500. One test runs the real
server (uvicorn in its own process, on a free loopback port).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from images import draw_digit, encode, png_header
from PIL import Image

import digitlab.api
from digitlab.api import MAX_BATCH, create_app, run_server, uploads
from digitlab.errors import DigitlabError
from digitlab.preprocess import MAX_BYTES

pytestmark = pytest.mark.slow  # every test here serves the trained run


@pytest.fixture(scope="module")
def client(trained_run):
    with TestClient(create_app(trained_run), raise_server_exceptions=False) as client:
        yield client


def upload(client, data: bytes, name: str = "digit.png", url: str = "/predict"):
    return client.post(url, files={"file": (name, data, "application/octet-stream")})


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def assert_prediction(body: dict, digit: int) -> None:
    assert body["digit"] == digit and body["label"] == str(digit)
    assert len(body["probabilities"]) == 10
    assert abs(sum(body["probabilities"]) - 1) < 1e-3
    assert int(np.argmax(body["probabilities"])) == digit
    with Image.open(io.BytesIO(base64.b64decode(body["preprocessed"]))) as seen:
        assert seen.size == (28, 28) and seen.mode == "L"


# --- the endpoints -------------------------------------------------------------------------


def test_health_answers_once_the_model_is_loaded(client, trained_run):
    assert client.get("/health").json() == {"status": "ok", "run": trained_run.name}


def test_model_describes_the_served_run(client, trained_run):
    info = client.get("/model").json()
    assert info["run"] == trained_run.name
    assert info["preset"] == "seed" and info["dataset"] == "mnist"
    assert info["test_accuracy"] == pytest.approx(trained_run.metrics.test_accuracy)
    assert info["parameters"] == trained_run.model.count_params() == 99_710
    assert info["class_names"] == [str(d) for d in range(10)]


@pytest.mark.parametrize("digit", [3, 7])
def test_predict_recognizes_an_uploaded_drawing(client, digit):
    response = upload(client, encode(draw_digit(digit)))
    assert response.status_code == 200
    assert_prediction(response.json(), digit)


def test_predict_returns_what_the_model_saw(client):
    body = upload(client, encode(draw_digit(1))).json()
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["preprocessed"]))))
    assert seen[0].max() == 0 and seen.max() > 200  # white on black, MNIST-style


@pytest.mark.parametrize("shape", [(784,), (28, 28)])
def test_predict_takes_mnist_pixels_as_json(client, mnist, shape):
    (_, _), (x_test, y_test) = mnist
    response = client.post("/predict", json={"pixels": x_test[0].reshape(shape).tolist()})
    assert response.status_code == 200
    body = response.json()
    assert_prediction(body, int(y_test[0]))  # the notebook's first test digit, a 7
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["preprocessed"]))))
    np.testing.assert_array_equal(seen, x_test[0])  # pixels skip preprocessing


def test_batch_predicts_many_uploads_in_order(client):
    files = [("files", (f"{d}.png", encode(draw_digit(d)), "image/png")) for d in (4, 0, 9)]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200
    assert [p["digit"] for p in response.json()["predictions"]] == [4, 0, 9]


def test_batch_predicts_many_pixel_arrays(client, mnist):
    (_, _), (x_test, y_test) = mnist
    response = client.post("/predict/batch", json={"images": x_test[:20].tolist()})
    assert response.status_code == 200
    predicted = [p["digit"] for p in response.json()["predictions"]]
    single = [
        client.post("/predict", json={"pixels": x.tolist()}).json()["digit"] for x in x_test[:3]
    ]
    assert predicted[:3] == single  # padding a batch doesn't change its answers
    assert np.mean(np.array(predicted) == y_test[:20]) >= 0.9


def test_random_test_digit_shows_a_real_digit_and_its_prediction(client, mnist):
    (_, _), (x_test, y_test) = mnist
    body = client.get("/random-test-digit", params={"index": 0}).json()
    assert body["index"] == 0 and body["expected"] == int(y_test[0]) == 7
    assert_prediction(body, 7)
    random_one = client.get("/random-test-digit").json()
    assert 0 <= random_one["index"] < len(x_test)
    assert random_one["expected"] == int(y_test[random_one["index"]])


def test_docs_and_openapi_describe_both_request_kinds(client):
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "cdn" not in docs.text.lower()  # the docs page works offline too
    for asset in re.findall(r'(?:src|href)="(/[^"]+)"', docs.text):
        assert client.get(asset).status_code == 200, asset
    spec = client.get("/openapi.json").json()
    kinds = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(kinds)
    assert {"/predict", "/predict/batch", "/model", "/health", "/random-test-digit"} <= set(
        spec["paths"]
    )


def test_the_drawing_page_and_its_assets_are_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    for asset in ("/static/app.js", "/static/style.css"):
        response = client.get(asset)
        assert response.status_code == 200
        assert "http://" not in response.text and "https://" not in response.text  # no CDN
    assert "https://" not in page.text and "http://" not in page.text


# --- bad input: a 4xx with a JSON message, never a 500 --------------------------------------


def huge_png() -> bytes:
    return encode(Image.new("1", (5000, 4000)))


BAD_UPLOADS = {
    "not an image": (b"hello, world", 422, "not a supported image"),
    "truncated image": (encode(draw_digit(3))[:300], 422, "truncated"),
    "empty file": (b"", 422, "empty"),
    "empty canvas": (encode(Image.new("L", (280, 280), 255)), 422, "no digit found"),
    "transparent canvas": (encode(Image.new("RGBA", (280, 280))), 422, "no digit found"),
    "over 4096x4096": (huge_png(), 422, "limit of 4096×4096 pixels"),
    "decompression bomb": (png_header(100_000, 100_000), 422, "limit of 4096×4096 pixels"),
}


@pytest.mark.parametrize("case", BAD_UPLOADS, ids=list(BAD_UPLOADS))
def test_a_bad_upload_gets_a_4xx_with_a_message(client, case):
    data, status, message = BAD_UPLOADS[case]
    response = upload(client, data)
    assert response.status_code == status
    assert message in response.json()["detail"]


PIXEL_784 = [0] * 784
BAD_JSON = {
    "too few pixels": ({"pixels": [0] * 783}, "784 numbers"),
    "too many pixels": ({"pixels": [0] * 785}, "784 numbers"),
    "28x27": ({"pixels": [[0] * 27] * 28}, "784 numbers"),
    "ragged rows": ({"pixels": [[0] * 28] * 27 + [[0] * 5]}, "784 numbers"),
    "not numbers": ({"pixels": ["a"] * 784}, "784 numbers"),
    "booleans": ({"pixels": [True] * 784}, "784 numbers"),
    "above 255": ({"pixels": [*PIXEL_784[:-1], 256]}, "between 0 and 255"),
    "negative": ({"pixels": [-1, *PIXEL_784[1:]]}, "between 0 and 255"),
    "no pixels key": ({"image": PIXEL_784}, '"pixels"'),
    "not an object": ([0] * 784, '"pixels"'),
}


@pytest.mark.parametrize("case", BAD_JSON, ids=list(BAD_JSON))
def test_bad_pixels_get_a_422_with_a_message(client, case):
    body, message = BAD_JSON[case]
    response = client.post("/predict", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]


def test_a_nan_pixel_is_refused(client):
    text = json.dumps({"pixels": [float("nan"), *PIXEL_784[1:]]})  # Python writes NaN
    response = client.post("/predict", content=text, headers={"content-type": "application/json"})
    assert response.status_code == 422 and "between 0 and 255" in response.json()["detail"]


def test_malformed_requests_get_a_4xx_with_a_message(client):
    cases = [
        (
            client.post(
                "/predict", content=b"{not json", headers={"content-type": "application/json"}
            ),
            400,
        ),
        (client.post("/predict", content=b"abc", headers={"content-type": "text/plain"}), 415),
        (client.post("/predict", data={"note": "no file here"}), 415),  # urlencoded form
        (client.post("/predict", files={"note": (None, "text, not a file")}), 422),
        (
            client.post(
                "/predict", content=b"--x\r\n", headers={"content-type": "multipart/form-data"}
            ),
            400,
        ),
        (client.get("/random-test-digit", params={"index": 10_000}), 422),
        (client.get("/random-test-digit", params={"index": "first"}), 422),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert isinstance(response.json()["detail"], str) and response.json()["detail"]


def test_an_upload_over_the_size_limit_is_refused_by_its_declared_length(client):
    data = b"\x89PNG" + bytes(5 * 1024 * 1024 + 100 * 1024)
    response = upload(client, data)
    assert response.status_code == 413
    assert "5 MiB limit" in response.json()["detail"]


def test_a_streamed_upload_over_the_limit_is_cut_off_without_a_length(client):
    def chunks():  # no Content-Length: the server counts as it reads
        yield b'{"pixels": ['
        for _ in range(100):
            yield b"0, " * 20_000

    response = client.post(
        "/predict", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_the_size_limit_is_configurable(trained_run):
    with TestClient(create_app(trained_run, max_upload_bytes=1000)) as small:
        response = upload(small, encode(draw_digit(3).convert("RGB"), "BMP"))  # ~235 KB
        assert response.status_code == 413


def test_a_bad_image_in_a_batch_is_refused_in_its_own_entry(client):
    files = [
        ("files", (f"{i}.png", data, "image/png"))
        for i, data in enumerate([encode(draw_digit(1)), b"junk"])
    ]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200 and response.json()["failed"] == 1
    good, bad = response.json()["predictions"]
    assert good["digit"] == 1 and bad == {"index": 1, "error": bad["error"]}
    assert bad["error"].startswith("not a supported image")
    too_many = client.post("/predict/batch", json={"images": [PIXEL_784] * (MAX_BATCH + 1)})
    assert too_many.status_code == 422  # the request itself: refused whole
    empty = client.post("/predict/batch", json={"images": []})
    assert empty.status_code == 422
    ink = [*PIXEL_784[:-1], 255]  # all 0 would be blank: "no digit found"
    bad_pixels = client.post("/predict/batch", json={"images": [ink, [1, 2, 3]]})
    assert bad_pixels.status_code == 200
    assert bad_pixels.json()["predictions"][1]["error"].startswith("pixels must be 784 numbers")


# --- issue 10: what Python's json can't read, pixel rules, blank images, heavy decodes -------

JSON = {"content-type": "application/json"}
UNREADABLE_JSON = {
    "a 5000-digit integer": ('{"pixels": [' + "9" * 5000 + "]}", "number too long"),
    "nested 100,000 deep": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "nested 1,000 deep": ('{"pixels": ' + "[" * 1000 + "]" * 1000 + "}", "nested too deeply"),
}


@pytest.mark.parametrize("url", ["/predict", "/predict/batch"])
@pytest.mark.parametrize("case", UNREADABLE_JSON, ids=list(UNREADABLE_JSON))
def test_json_that_python_cannot_read_gets_a_400_not_a_500(client, url, case):
    body, message = UNREADABLE_JSON[case]
    response = client.post(url, content=body, headers=JSON)
    assert response.status_code == 400, response.text
    assert message in response.json()["detail"]
    assert client.get("/health").status_code == 200


def pixels_text(first: str) -> str:
    return '{"pixels": [' + first + ", 0" * 783 + "]}"


GARBAGE = {
    "empty body": ("", 400),
    "not UTF-8": (b"\xff\xfe{", 400),
    "null": ("null", 422),
    "a string": ('"pixels"', 422),
    "pixels null": ('{"pixels": null}', 422),
    "pixels an object": ('{"pixels": {"0": 1}}', 422),
    "NaN": (pixels_text("NaN"), 422),
    "Infinity": (pixels_text("Infinity"), 422),
    "-Infinity": (pixels_text("-Infinity"), 422),
    "1e400 (infinite)": (pixels_text("1e400"), 422),
    "a 40-digit pixel": (pixels_text("1" + "0" * 40), 422),
    "a negative 40-digit pixel": (pixels_text("-1" + "0" * 40), 422),
    "a string pixel": (pixels_text('"7"'), 422),
    "a null pixel": (pixels_text("null"), 422),
    "a boolean pixel": (pixels_text("true"), 422),
    "a boolean in a row": (json.dumps({"pixels": [[True] + [0] * 27] + [[9] * 28] * 27}), 422),
    "nested past numpy's 64 dimensions": ('{"pixels": ' + "[" * 70 + "]" * 70 + "}", 422),
    "28 rows, one a number": (json.dumps({"pixels": [[0] * 28] * 27 + [0]}), 422),
}


@pytest.mark.parametrize("case", GARBAGE, ids=list(GARBAGE))
def test_garbage_json_gets_a_4xx_with_a_message(client, case):
    body, status = GARBAGE[case]
    for url in ("/predict", "/predict/batch"):
        response = client.post(url, content=body, headers=JSON)
        assert response.status_code == status, (url, response.text)
        assert isinstance(response.json()["detail"], str) and response.json()["detail"]


def test_garbage_batches_get_a_4xx_or_an_error_per_image(client):
    for images in (None, 5, "x"):
        response = client.post("/predict/batch", json={"images": images})
        assert response.status_code == 422, (images, response.text)
    for images in ([None], [[]], [{}], [[0] * 784, "x"], [[0.5] * 783 + [-1]]):
        response = client.post("/predict/batch", json={"images": images})
        assert response.status_code == 200, (images, response.text)
        entries = response.json()["predictions"]
        assert response.json()["failed"] == len(entries) == len(images)
        assert all(isinstance(entry["error"], str) and entry["error"] for entry in entries)
    response = client.post("/predict/batch", files={"files": ("a.png", b"", "image/png")})
    assert response.status_code == 200 and "empty" in response.json()["predictions"][0]["error"]


def test_float_pixels_in_0_1_are_scaled_by_255_like_the_library(client):
    response = client.post("/predict", json={"pixels": [0.8] * 784})
    assert response.status_code == 200, response.text
    seen = np.asarray(Image.open(io.BytesIO(base64.b64decode(response.json()["preprocessed"]))))
    assert (seen == 204).all()  # 0.8 × 255, as prediction.as_batch reads it, not 0.8 → 1
    integers = client.post("/predict", json={"pixels": [1] * 784}).json()["preprocessed"]
    assert (np.asarray(Image.open(io.BytesIO(base64.b64decode(integers)))) == 1).all()


def test_blank_pixels_and_an_empty_canvas_get_the_same_answer(client, mnist):
    canvas = upload(client, encode(Image.new("L", (280, 280), 255)))
    assert canvas.status_code == 422 and "no digit found" in canvas.json()["detail"]
    for pixels in ([0] * 784, [[0.0] * 28] * 28):
        response = client.post("/predict", json={"pixels": pixels})
        assert (response.status_code, response.json()) == (422, canvas.json())
    (_, _), (x_test, _) = mnist
    batch = client.post("/predict/batch", json={"images": [x_test[0].tolist(), [0] * 784]})
    assert batch.status_code == 200
    assert batch.json()["predictions"][1] == {"index": 1, "error": canvas.json()["detail"]}


def big_in_pixels(size: int = 2048) -> bytes:
    """A PNG of few bytes (tens of KB) and many pixels: a digit drawn on a huge canvas."""
    return encode(draw_digit(1).resize((size, size)).convert("RGBA"))


def test_an_upload_large_in_pixels_is_decoded_off_the_event_loop(client, monkeypatch):
    on_the_loop = []
    real = uploads.preprocess

    def spy(image, *frame):
        try:
            asyncio.get_running_loop()
            on_the_loop.append(True)
        except RuntimeError:  # no event loop in this thread: a worker thread
            on_the_loop.append(False)
        return real(image, *frame)

    monkeypatch.setattr(uploads, "preprocess", spy)
    data = big_in_pixels()
    assert len(data) < MAX_BYTES / 20  # small in bytes: the old rule kept it inline
    assert upload(client, data).status_code == 200
    assert upload(client, encode(draw_digit(3))).status_code == 200  # a canvas: 3 ms, inline
    assert on_the_loop == [False, True]


def test_decodes_in_threads_are_bounded(trained_run, monkeypatch):
    monkeypatch.setattr(uploads, "DECODE_THREADS", 2, raising=False)  # absent before the fix
    active, peak, lock = 0, 0, threading.Lock()

    def slow_preprocess(image, *frame):
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.2)  # hold the slot so that requests overlap
        with lock:
            active -= 1
        return np.zeros((28, 28), np.uint8)

    monkeypatch.setattr(uploads, "preprocess", slow_preprocess)
    app = create_app(trained_run)
    noise = np.random.default_rng(0).integers(0, 256, (600, 600), dtype=np.uint8)
    data = encode(Image.fromarray(noise))  # 360,000 pixels and ~360 KB

    async def six_at_once():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            file = {"file": ("noise.png", data, "image/png")}
            return await asyncio.gather(*(http.post("/predict", files=file) for _ in range(6)))

    responses = asyncio.run(six_at_once())
    assert [r.status_code for r in responses] == [200] * 6
    assert 1 <= peak <= 2


def test_a_request_over_the_pixel_budget_is_refused_before_decoding(client):
    header = png_header(4096, 4096)  # 16.8 million pixels each, by its header
    three = [("files", (f"{i}.png", header, "image/png")) for i in range(3)]
    response = client.post("/predict/batch", files=three)
    assert response.status_code == 413
    assert "pixels in all" in response.json()["detail"]
    two = client.post("/predict/batch", files=three[:2])  # within the budget: decoded, truncated
    assert two.status_code == 200 and two.json()["failed"] == 2
    assert all("truncated" in entry["error"] for entry in two.json()["predictions"])


def test_extra_form_fields_are_ignored(client):
    fields = {f"note{i}": (None, "hello") for i in range(5)}
    files = {"file": ("3.png", encode(draw_digit(3)), "image/png"), **fields}
    response = client.post("/predict", files=files)
    assert response.status_code == 200 and response.json()["digit"] == 3


def test_the_openapi_schema_declares_every_error_with_its_model(client):
    spec = client.get("/openapi.json").json()
    error = {"$ref": "#/components/schemas/ErrorDetail"}
    expected = {
        ("/predict", "post"): {"200", "400", "413", "415", "422"},
        ("/predict/batch", "post"): {"200", "400", "413", "415", "422"},
        ("/random-test-digit", "get"): {"200", "422", "503"},
    }
    for (path, method), statuses in expected.items():
        responses = spec["paths"][path][method]["responses"]
        assert set(responses) == statuses, path
        for status in statuses - {"200"}:
            assert responses[status]["content"]["application/json"]["schema"] == error
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    assert "scaled by 255" in body["schema"]["properties"]["pixels"]["description"]


@pytest.mark.parametrize("port", [0, -1, 65536, 70000])
def test_a_port_outside_1_to_65535_is_refused_in_one_line(trained_run, monkeypatch, port):
    """By the library (`ports.bind_port`) and by the CLI's `--port` bounds, before the run is
    loaded or uvicorn started."""
    import uvicorn
    from typer.testing import CliRunner

    from digitlab.cli import app

    started = []
    monkeypatch.setattr(uvicorn, "Server", lambda config: started.append(config))
    with pytest.raises(DigitlabError, match=f"^--port must be .* between 1 and 65535, got {port}$"):
        run_server(trained_run, port=port)
    monkeypatch.setattr(digitlab.api, "run_server", lambda *args, **kwargs: started.append(kwargs))
    result = CliRunner().invoke(app, ["serve", str(trained_run.path), "--port", str(port)])
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith("Error: ") and "--port" in line, line
    assert started == []


# --- the real server -----------------------------------------------------------------------


def test_a_real_uvicorn_server_answers_on_loopback(trained_run):
    port = free_port()
    code = (
        f"from digitlab.api import run_server; run_server({str(trained_run.path)!r}, port={port})"
    )
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    server = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not start within 90 s"
            time.sleep(0.2)
        png = encode(draw_digit(2))
        response = httpx.post(f"{base}/predict", files={"file": ("2.png", png, "image/png")})
        assert response.status_code == 200 and response.json()["digit"] == 2
        assert (
            httpx.post(
                f"{base}/predict", content=b"x", headers={"content-type": "image/png"}
            ).status_code
            == 415
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
