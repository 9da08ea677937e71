"""A batch never fails for one item (issue 23): `predict` with many inputs and `/predict/batch`
answer every good input and give each bad one its own one-line reason, in its place.

The runs here are untrained (`runfiles.model_run`, built in a second): what is checked is
which inputs are answered and how the bad ones are reported, not what digit comes out.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from images import draw_digit, encode
from PIL import Image
from runfiles import model_run
from typer.testing import CliRunner

from digitlab.api import create_app
from digitlab.api.uploads import MAX_BATCH
from digitlab.cli import app
from digitlab.prediction import gather_inputs, predict_inputs
from digitlab.runs import load_run

runner = CliRunner()


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    return model_run(tmp_path_factory.mktemp("runs") / "20260101-000000-seed")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A drawn 3, a blank page, a text file posing as a PNG, and a path with nothing there."""
    folder = tmp_path_factory.mktemp("images")
    draw_digit(3).save(folder / "three.png")
    Image.new("L", (280, 280), 255).save(folder / "blank.png")
    (folder / "junk.png").write_text("not an image")
    return {
        "three": folder / "three.png",
        "blank": folder / "blank.png",
        "junk": folder / "junk.png",
        "missing": folder / "missing.png",
    }


def predict(*args):
    return runner.invoke(app, ["predict", *map(str, args)])


def alone_error(run_path, image) -> str:
    """What `predict RUN IMAGE` says of `image` alone: its one `Error:` line, less `Error: `."""
    result = predict(run_path, image)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0].removeprefix("Error: ")


# ------------------------------------------------------------------------------------ the CLI
def test_a_blank_image_among_good_ones_is_marked_and_the_others_answered(run_path, images):
    result = predict(run_path, "--index", "0", images["three"], images["blank"], "--json")
    assert result.exit_code == 2, result.output
    rows = json.loads(result.stdout)
    assert [row["input"] for row in rows] == ["test[0]", str(images["three"]), str(images["blank"])]
    assert rows[0]["true_label"] == "7" and len(rows[0]["probabilities"]) == 10
    assert {"digit", "label", "probabilities", "confident"} <= set(rows[1])
    assert rows[2] == {
        "input": str(images["blank"]),
        "error": alone_error(run_path, images["blank"]),
    }
    assert "no digit found" in rows[2]["error"]
    assert "1 of 3 inputs could not be predicted" in result.stderr


def test_each_bad_input_keeps_its_place_and_its_own_reason(run_path, images, tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((2, 5)))
    order = [images["junk"], images["three"], images["missing"], images["blank"]]
    result = predict(run_path, "--npy", tmp_path / "wrong.npy", *order, "--json")
    assert result.exit_code == 2, result.output
    rows = json.loads(result.stdout)
    assert [row["input"] for row in rows] == [str(tmp_path / "wrong.npy"), *map(str, order)]
    assert ["error" in row for row in rows] == [True, True, False, True, True]
    assert "images must be shaped" in rows[0]["error"]
    assert rows[1]["error"] == alone_error(run_path, images["junk"])
    assert "missing.png not found" in rows[3]["error"]
    assert all(set(row) == {"input", "error"} for row in rows if "error" in row)
    assert "4 of 5 inputs could not be predicted" in result.stderr


def test_the_table_shows_a_bad_inputs_reason_in_place_of_its_prediction(run_path, images):
    result = runner.invoke(
        app, ["predict", str(run_path), str(images["blank"]), str(images["three"])],
        env={"COLUMNS": "200"},
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    blank_row = next(line for line in result.stdout.splitlines() if "blank.png" in line)
    assert "no digit found" in blank_row
    assert blank_row.count("blank.png") == 1  # the row names it once: the reason doesn't repeat it
    three_row = next(line for line in result.stdout.splitlines() if "three.png" in line)
    assert "no digit found" not in three_row and "0." in three_row  # a probability
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and error_lines[0].startswith("Error: 1 of 2 inputs")
    assert "Traceback" not in result.output


def test_one_bad_image_alone_is_still_one_error_line(run_path, images):
    assert "no digit found" in alone_error(run_path, images["blank"])
    assert "missing.png not found" in alone_error(run_path, images["missing"])


def test_every_input_bad_lists_every_reason(run_path, images):
    result = predict(run_path, images["blank"], images["junk"], "--json")
    assert result.exit_code == 2, result.output
    rows = json.loads(result.stdout)
    assert [set(row) for row in rows] == [{"input", "error"}] * 2
    assert "2 of 2 inputs could not be predicted" in result.stderr


def test_a_bad_index_is_a_mistake_in_the_command_and_refused_whole(run_path, images):
    result = predict(run_path, images["three"], "--index", "10000")
    assert result.exit_code == 2 and "--index 10000 is out of range" in result.output
    assert "three.png" not in result.stdout  # nothing predicted


def test_the_library_keeps_the_refused_inputs_in_place(run_path, images):
    run = load_run(run_path)
    inputs = gather_inputs(run, [images["blank"], images["three"]], indices=["1"])
    assert inputs.sources == ["test[1]", str(images["three"])]
    assert [(r.input, r.position) for r in inputs.refused] == [(str(images["blank"]), 1)]
    prediction = predict_inputs(run, inputs)
    assert prediction.probabilities.shape == (2, 10)
    rows = prediction.to_list(inputs.truths)
    assert [row["input"] for row in rows] == ["test[1]", str(images["blank"]), str(images["three"])]
    assert "1 refused" in repr(prediction) and "refused: " in prediction._repr_html_()


# ------------------------------------------------------------------------------------ the API
@pytest.fixture(scope="module")
def client(run_path):
    with TestClient(create_app(run_path), raise_server_exceptions=False) as client:
        yield client


def test_a_batch_of_pixels_answers_the_good_and_marks_the_bad(client, mnist):
    (_, _), (x_test, _) = mnist
    good, blank, short = x_test[0].tolist(), [0] * 784, [1, 2, 3]
    response = client.post("/predict/batch", json={"images": [good, blank, short, good]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["failed"] == 2
    entries = body["predictions"]
    assert [entry["index"] for entry in entries] == [0, 1, 2, 3]
    assert "digit" in entries[0] and entries[0] == entries[3] | {"index": 0}
    alone = client.post("/predict", json={"pixels": blank})
    assert alone.status_code == 422
    assert entries[1] == {"index": 1, "error": alone.json()["detail"]}
    assert entries[2]["error"].startswith("pixels must be 784 numbers")


def test_a_batch_of_uploads_answers_the_good_and_marks_the_bad(client):
    blank = encode(Image.new("L", (280, 280), 255))
    files = [
        ("files", (name, data, "image/png"))
        for name, data in [("3.png", encode(draw_digit(3))), ("junk", b"junk"), ("b.png", blank)]
    ]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    entries = response.json()["predictions"]
    assert "digit" in entries[0] and "error" not in entries[0]
    assert entries[1] == {"index": 1, "error": client.post(
        "/predict", files={"file": ("junk", b"junk", "image/png")}).json()["detail"]}  # fmt: skip
    assert "no digit found" in entries[2]["error"]
    assert response.json()["failed"] == 2


def test_a_batch_with_no_good_image_is_still_answered_per_image(client):
    response = client.post("/predict/batch", json={"images": [[0] * 784]})
    assert response.status_code == 200, response.text
    assert response.json()["failed"] == 1
    assert "no digit found" in response.json()["predictions"][0]["error"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"images": []}, 422),
        ({"images": [[9] * 784] * (MAX_BATCH + 1)}, 422),
        ({"images": "x"}, 422),
        ({"pixels": [9] * 784}, 422),
    ],
)
def test_a_bad_request_is_still_refused_whole(client, body, status):
    response = client.post("/predict/batch", json=body)
    assert response.status_code == status, response.text
    assert isinstance(response.json()["detail"], str)


def test_the_openapi_schema_describes_refused_entries(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    items = schemas["BatchPrediction"]["properties"]["predictions"]["items"]["anyOf"]
    assert {ref["$ref"].rsplit("/", 1)[1] for ref in items} == {"PredictedImage", "RefusedImage"}
    assert set(schemas["RefusedImage"]["required"]) == {"index", "error"}
    assert "failed" in schemas["BatchPrediction"]["required"]
    batch_422 = spec["paths"]["/predict/batch"]["post"]["responses"]["422"]["description"]
    assert "own error entry" in batch_422
    single_422 = spec["paths"]["/predict"]["post"]["responses"]["422"]["description"]
    assert "no digit found" in single_422
