"""`inspect`, `explain` and `POST /explain`, and the sanity checks that keep explanations honest.

A small seed-preset model (3,000 digits, 2 epochs, a few seconds) is trained once for the
module: enough to learn real strokes, small enough for CI.
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json

import numpy as np
import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from digitlab import insight
from digitlab.cli import app
from digitlab.errors import DigitlabError
from digitlab.insight.explanation import _layer_values
from digitlab.insight.inspection import _stats_of

runner = CliRunner()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, mnist):
    from digitlab.presets import get_preset
    from digitlab.training import train

    spec = get_preset("seed")
    spec = spec.model_copy(
        update={"train": spec.train.model_copy(update={"train_samples": 3000, "epochs": 2})}
    )
    return train(spec, runs_dir=tmp_path_factory.mktemp("runs"), verbose=0, pictures=False)


@pytest.fixture(scope="module")
def test_digits(mnist):
    _, (x_test, y_test) = mnist
    return x_test[:100], y_test[:100]


def _with_model(run, model):
    """A copy of `run` whose network is `model` (same spec, other weights)."""
    copy = dataclasses.replace(run)
    copy.__dict__["model"] = model
    return copy


def _initial_model(run):
    """The run's network as it was before training: built again from its spec and seed."""
    import keras

    from digitlab.model import build_model

    keras.utils.set_random_seed(run.spec.train.seed)
    return build_model(run.spec, num_classes=len(run.class_names))


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


# --------------------------------------------------------------------------- sanity checks
def test_gradient_saliency_is_the_derivative_of_the_class_logit(small_run, test_digits):
    """Autodiff agrees with a central finite difference of the output layer's logit."""
    probe = insight.Probe.of(small_run)
    image = test_digits[0][:1]
    grad = probe.saliency(image, np.array([7]), method="gradient").reshape(-1)
    x = probe.inputs(image).astype(np.float64)
    for pixel in np.argsort(-np.abs(grad))[:3]:
        step = np.zeros_like(x)
        step[0, pixel] = 1e-2
        up = np.asarray(probe.forward((x + step).astype(np.float32))[1])[0, 7]
        down = np.asarray(probe.forward((x - step).astype(np.float32))[1])[0, 7]
        assert (up - down) / 2e-2 == pytest.approx(grad[pixel], rel=0.05, abs=1e-3)


@pytest.mark.parametrize("method", insight.METHODS)
def test_saliency_of_a_randomised_model_differs(small_run, test_digits, method):
    """Adebayo et al. 2018: re-initialise the weights and the map must change. Compared
    on the ink pixels, where integrated gradients can be non-zero at all."""
    images = test_digits[0][:20]
    trained = insight.Probe(small_run).saliency(images, method=method)
    random_run = _with_model(small_run, _initial_model(small_run))
    randomised = insight.Probe(random_run).saliency(images, method=method)
    correlations = [
        _rank_correlation(np.abs(t[img > 0]), np.abs(r[img > 0]))
        for t, r, img in zip(trained, randomised, images, strict=True)
    ]
    # Measured on this model: gradient ≈ 0.03, integrated ≈ 0.41. Integrated gradients
    # multiplies by the input, so part of its map is the digit itself, whatever the weights.
    assert np.mean(correlations) < {"gradient": 0.3, "integrated": 0.6}[method]
    # and the same model gives the same map: the difference is the weights', not noise
    again = insight.Probe(small_run).saliency(images, method=method)
    np.testing.assert_allclose(again, trained, rtol=1e-5, atol=1e-6)


def test_occluding_the_most_salient_pixels_hurts_more_than_random_ink(small_run, test_digits):
    """Over 100 test digits: removing the top 5% of pixels by integrated gradients lowers
    the predicted class's probability more than removing 5% random ink pixels."""
    by_saliency, by_chance = insight.occlusion_drop(small_run, test_digits[0])
    assert by_saliency > by_chance + 0.05
    assert by_saliency > 2 * by_chance


def test_integrated_gradients_beat_the_plain_gradient_on_occlusion(small_run, test_digits):
    """Why integrated gradients is the default: it measures better on the occlusion check."""
    integrated, _ = insight.occlusion_drop(small_run, test_digits[0], method="integrated")
    gradient, _ = insight.occlusion_drop(small_run, test_digits[0], method="gradient")
    assert integrated > gradient


def test_first_layer_weights_of_a_trained_run_are_not_the_initialisation(small_run):
    trained, name = insight.first_layer_weights(small_run.model)
    initial, _ = insight.first_layer_weights(_initial_model(small_run))
    assert trained.shape == initial.shape == (100, 28, 28)
    assert name == small_run.model.layers[0].name
    change = np.linalg.norm(trained - initial) / np.linalg.norm(initial)
    assert change > 0.05
    # rebuilding from the seed is the initialisation: a second build gives the same weights
    np.testing.assert_array_equal(
        initial, insight.first_layer_weights(_initial_model(small_run))[0]
    )


# ----------------------------------------------------------------------------- statistics
def test_stats_count_dead_relus_and_saturated_sigmoids():
    relu = insight.LayerInfo(0, "h", "Dense", "relu", (4,))
    values = np.array([[0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.5, 0.0]])
    stats = _stats_of(relu, values)
    assert stats["dead_fraction"] == 0.25  # only unit 0 is zero on every digit
    assert stats["saturated_fraction"] is None
    assert stats["mean_per_unit_sorted"] == [1.0, 0.5, 0.25, 0.0]
    assert sum(stats["histogram"]["counts"]) == 8
    sigmoid = insight.LayerInfo(0, "s", "Dense", "sigmoid", (4,))
    values = np.array([[0.005, 0.5, 0.995, 0.98], [0.0, 0.2, 1.0, 0.011]])
    stats = _stats_of(sigmoid, values)
    assert stats["saturated_fraction"] == 4 / 8  # 0.005, 0.995, 0.0, 1.0
    assert stats["dead_fraction"] is None


def test_conv_filters_are_the_first_layer_tiles():
    import keras

    model = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Conv2D(6, 5), keras.layers.Flatten()]
    )
    tiles, _name = insight.first_layer_weights(model)
    assert tiles.shape == (6, 5, 5)
    np.testing.assert_array_equal(tiles[2], np.asarray(model.layers[0].kernel.value)[:, :, 0, 2])


def test_inspect_writes_pictures_and_statistics(small_run, tmp_path, mnist):
    result = insight.inspect(small_run, tmp_path / "out", count=200)
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(
        [insight.WEIGHTS_PNG, insight.ACTIVATIONS_PNG, insight.CLASS_INPUTS_PNG, "inspect.json"]
    )
    record = json.loads((tmp_path / "out" / "inspect.json").read_text())
    assert record["digits"] == 200
    assert [layer["activation"] for layer in record["layers"]] == ["sigmoid", "relu", "relu"]
    assert record["layers"][0]["saturated_fraction"] is not None
    assert record["layers"][1]["dead_fraction"] is not None
    assert all(sum(layer["histogram"]["counts"]) == 200 * 100 for layer in record["layers"])
    for layer in record["layers"]:
        means = layer["mean_per_unit_sorted"]
        assert len(means) == 100 and means == sorted(means, reverse=True)
    # the statistics are those of the network on these digits: recompute one by hand
    probe = insight.Probe.of(small_run)
    values, _ = probe.activations(mnist[1][0][:200])
    assert record["layers"][1]["dead_fraction"] == pytest.approx(
        float((values[1].max(axis=0) <= 0).mean())
    )
    for png in result.files[:3]:
        assert Image.open(png).size[0] > 100
    # what `inspect --json` prints, and the table it prints without
    assert result.to_dict() == {
        "run": str(small_run.path),
        "out": str(tmp_path / "out"),
        "layers": record["layers"],
    }
    console = Console(record=True, width=300)
    result.print(console)
    lines = console.export_text().splitlines()
    assert lines[0] == f"run {small_run.path}: 200 test digits at most"
    rows = [line for line in lines if line.startswith("│")]
    assert [row.split("│")[2].strip() for row in rows] == ["sigmoid", "relu", "relu"]
    assert lines[-4:] == [f"wrote {path}" for path in result.files]


def test_inspect_adds_its_table_to_the_run_report(small_run):
    from digitlab.report.pages import write_run_report

    report = write_run_report(small_run)
    assert 'id="inspect-stats"' not in report.read_text()
    insight.inspect(small_run, count=100)
    html = report.read_text()
    first = small_run.model.layers[0].name  # Keras numbers names per process: dense, dense_7...
    assert 'id="inspect-stats"' in html and first in html and "sigmoid" in html


def test_class_inputs_average_the_right_digits(small_run, mnist):
    probe = insight.Probe.of(small_run)
    images, labels = mnist[1][0][:300], mnist[1][1][:300]
    _, probs = probe.activations(images)
    averages, templates, _ = insight.class_inputs(probe, images, labels, probs)
    assert averages.shape == templates.shape == (10, 28, 28)
    ones = (labels == 1) & (probs.argmax(axis=1) == 1)
    expected = np.average(images[ones].astype(float), axis=0, weights=probs[ones, 1])
    np.testing.assert_allclose(averages[1], expected, rtol=1e-6)
    assert np.isnan(templates[:, 0, 0]).all()  # a corner pixel no digit inks


# -------------------------------------------------------------------------------- explain
def test_explain_gives_layers_top3_and_saliency(small_run, test_digits):
    image = test_digits[0][0]
    result = insight.explain(small_run, image)
    probs = small_run.predict_proba(image[None])[0]
    assert result.digit == int(probs.argmax()) == result.target
    np.testing.assert_allclose(result.probabilities, probs, atol=1e-4)
    top = [row["digit"] for row in result.top3]
    assert top == list(np.argsort(-probs)[:3])
    assert [len(layer["values"]) for layer in result.layers] == [100, 100, 100, 10]
    saliency = np.asarray(result.saliency)
    assert saliency.shape == (28, 28)
    assert not saliency[image == 0].any()  # integrated gradients: no ink, no attribution
    other = insight.explain(small_run, image, target=3, method="gradient")
    assert other.target == 3 and other.method == "gradient"
    assert not np.allclose(other.saliency, result.saliency)


def test_an_explanation_as_json_keeps_its_keys_in_order(small_run, test_digits):
    """`explain --json` prints the run and the picture, then the explanation's fields in the
    order they always had; each value is the field's own."""
    result = insight.explain(small_run, test_digits[0][0])
    data = result.to_dict()
    keys = ["digit", "label", "probabilities", "top3", "target", "method", "saliency", "layers"]
    assert list(data) == keys
    assert data["top3"] is result.top3 and data["layers"] is result.layers
    shown = insight.ExplainedDigit(small_run.path, small_run.path / "x.png", result).to_dict()
    assert list(shown) == ["run", "png", *keys]
    assert shown["png"] == str(small_run.path / "x.png") and shown["run"] == str(small_run.path)


def test_the_digit_to_explain_is_an_image_or_a_test_index(small_run, mnist, tmp_path):
    for image, index in ((None, None), ("a.png", 0)):
        with pytest.raises(DigitlabError, match="give one image file or --index N"):
            insight.DigitChoice(image, index)
    digit, name = insight.DigitChoice(index=7).load(small_run)
    np.testing.assert_array_equal(digit, mnist[1][0][7])
    assert name == "test7"
    with pytest.raises(DigitlabError, match="out of range: the test split has 10000"):
        insight.DigitChoice(index=10_000).load(small_run)
    path = tmp_path / "seven.png"
    Image.fromarray(mnist[1][0][7]).save(path)
    digit, name = insight.DigitChoice(path, raw=True).load(small_run)
    np.testing.assert_array_equal(digit, mnist[1][0][7])  # raw: only resized, 28×28 already
    assert name == "seven"


def test_explain_digit_draws_the_picture_where_asked(small_run, tmp_path):
    explained = insight.explain_digit(small_run, insight.DigitChoice(index=3), method="gradient")
    assert explained.png == small_run.path / "inspect" / "explain-test3.png"
    assert Image.open(explained.png).size[0] > 100
    assert explained.explanation.method == "gradient"
    elsewhere = insight.explain_digit(
        small_run, insight.DigitChoice(index=3), out=tmp_path / "a.png"
    )
    assert elsewhere.png == tmp_path / "a.png" and elsewhere.png.is_file()
    assert elsewhere.explanation.method == "integrated"


def test_conv_layers_are_capped_to_eight_small_maps():
    info = insight.LayerInfo(0, "c", "Conv2D", "relu", (24, 24, 16))
    value = np.random.default_rng(0).random((24, 24, 16))
    entry = _layer_values(info, value)
    maps = np.asarray(entry["maps"])
    assert maps.shape == (8, 12, 12)
    assert "values" not in entry
    best = int(np.argmax(value.mean(axis=(0, 1))))
    assert entry["channels"][0] == best
    np.testing.assert_allclose(
        maps[0], value[..., best].reshape(12, 2, 12, 2).mean(axis=(1, 3)), atol=1e-4
    )


def test_saliency_png_is_a_transparent_overlay():
    saliency = np.zeros((28, 28))
    saliency[5, 5], saliency[6, 6] = 2.0, -1.0
    image = Image.open(io.BytesIO(insight.saliency_png(saliency)))
    rgba = np.asarray(image)
    assert image.mode == "RGBA" and rgba.shape == (28, 28, 4)
    assert rgba[0, 0, 3] == 0 and rgba[5, 5, 3] == 255
    assert rgba[5, 5, 0] > rgba[5, 5, 2] and rgba[6, 6, 2] > rgba[6, 6, 0]


# ------------------------------------------------------------------------------------ CLI
def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def test_cli_inspect_and_explain(small_run, tmp_path):
    result = _invoke("inspect", small_run.path, "--count", "100")
    assert result.exit_code == 0, result.output
    assert "dead ReLU" in result.output and "sigmoid" in result.output
    assert (small_run.path / "inspect" / "inspect.json").is_file()
    out = tmp_path / "why.png"
    result = _invoke("explain", small_run.path, "--index", "0", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["png"] == str(out) and out.is_file()
    assert len(data["top3"]) == 3 and data["layers"][-1]["name"]
    result = _invoke("explain", small_run.path, "--index", "0")
    assert result.exit_code == 0 and "probability" in result.output
    assert (small_run.path / "inspect" / "explain-test0.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give one image file or --index N"),
        (("--index", "10000"), "out of range"),
        (("--index", "0", "--method", "occlusion"), "--method must be one of"),
        (("--index", "0", "--target", "10"), "--target must be 0–9"),
        (("missing.png",), "missing.png not found"),
    ],
)
def test_cli_explain_refuses_bad_input_in_one_line(small_run, args, message):
    result = runner.invoke(app, ["explain", str(small_run.path), *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_cli_inspect_refuses_a_zero_count(small_run):
    result = runner.invoke(app, ["inspect", str(small_run.path), "--count", "0"])
    assert result.exit_code == 2 and "--count must be at least 1" in result.output


# ------------------------------------------------------------------------------------ API
@pytest.fixture(scope="module")
def client(small_run):
    from fastapi.testclient import TestClient

    from digitlab.api import create_app

    with TestClient(create_app(small_run)) as client:
        yield client


def test_api_explain_matches_predict(client, test_digits):
    pixels = test_digits[0][0].tolist()
    explained = client.post("/explain", json={"pixels": pixels})
    predicted = client.post("/predict", json={"pixels": pixels}).json()
    assert explained.status_code == 200
    body = explained.json()
    for key in predicted:
        assert body[key] == predicted[key]
    assert [len(layer["values"]) for layer in body["layers"]] == [100, 100, 100, 10]
    overlay = Image.open(io.BytesIO(base64.b64decode(body["saliency"])))
    assert overlay.size == (28, 28) and overlay.mode == "RGBA"
    assert body["target"] == body["digit"] == body["top3"][0]["digit"]


def test_api_explain_takes_uploads(client):
    canvas = Image.new("L", (280, 280), 255)
    canvas.paste(0, (130, 40, 150, 240))  # a dark vertical bar: a 1
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    response = client.post("/explain", files={"file": ("one.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 200, response.text
    assert response.json()["layers"]


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"json": {"pixels": [0] * 784}}, 422),
        ({"json": {"pixels": [1] * 5}}, 422),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 400),
        ({"content": b"x", "headers": {"content-type": "text/plain"}}, 415),
        ({"files": {"file": ("x.png", b"not an image", "image/png")}}, 422),
    ],
)
def test_api_explain_refuses_bad_input_like_predict(client, kwargs, status):
    explained = client.post("/explain", **kwargs)
    predicted = client.post("/predict", **kwargs)
    assert explained.status_code == predicted.status_code == status
    assert explained.json() == predicted.json()


def test_explain_is_in_the_openapi_schema(client):
    operation = client.get("/openapi.json").json()["paths"]["/explain"]["post"]
    assert set(operation["responses"]) >= {"200", "400", "413", "415", "422"}
    assert "multipart/form-data" in operation["requestBody"]["content"]


# -------------------------------------------------------------------------------- browser
@pytest.mark.browser
@pytest.mark.slow
def test_drawing_lights_up_the_layers_and_the_saliency(small_run, browser):
    """In the real Chromium: drawing a 7 fills one row of cells per layer and the saliency
    overlay, with no console error and no request leaving the machine; the page still
    fits a phone's width."""
    from browser import served
    from test_web import draw_strokes

    from digitlab.api import create_app

    with served(create_app(small_run)) as base:
        for width in (1024, 375):
            context = browser.new_context(viewport={"width": width, "height": 800})
            page = context.new_page()
            requested, errors = [], []
            page.on("request", lambda request, r=requested: r.append(request.url))
            page.on(
                "console",
                lambda m, e=errors: e.append(m.text) if m.type == "error" else None,
            )
            page.on("pageerror", lambda exc, e=errors: e.append(str(exc)))
            page.goto(base)
            page.wait_for_selector("#model-info:has-text('run ')")
            assert page.locator("#layers .layer").count() == 0
            draw_strokes(page, [[(80, 50), (200, 50), (150, 140), (115, 240)]])
            page.wait_for_function(
                "document.querySelectorAll('#layers .layer').length === 4", timeout=10_000
            )
            names = page.locator("#layers .layer").evaluate_all(
                "rows => rows.map(r => r.dataset.layer)"
            )
            assert names == [
                layer.name for layer in small_run.model.layers if "dense" in layer.name
            ]
            active = page.locator("#layers canvas").evaluate_all(
                "cs => cs.map(c => Number(c.dataset.active))"
            )
            assert all(count > 0 for count in active)
            # the cells are drawn: the first layer's canvas holds more than one colour
            colours = page.evaluate(
                """() => { const c = document.querySelector('#layers canvas');
                const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                const seen = new Set(); for (let i = 0; i < d.length; i += 4)
                seen.add(d[i] * 65536 + d[i + 1] * 256 + d[i + 2]); return seen.size; }"""
            )
            assert colours > 3
            assert (
                page.locator("#saliency").get_attribute("src").startswith("data:image/png;base64,")
            )
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            page.click("#clear")
            assert page.locator("#layers .layer").count() == 0
            outside = [u for u in requested if not u.startswith((base, "data:"))]
            assert not outside and not errors, (outside, errors)
            context.close()
