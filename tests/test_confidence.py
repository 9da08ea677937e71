"""Honest confidence (issue 12): calibrated at training time, one verdict everywhere."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from digitlab import confidence, ood, verifiers
from digitlab.cli import app
from digitlab.prediction import predict
from digitlab.runs import CONFIG_FILE, STATS_FILE, load_run


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory, mnist):
    """The seed preset on 3,000 digits, 3 epochs, validation split 0.1: calibrated when
    training ends on the test split's first half (writers it never saw), not its 300
    validation digits."""
    from digitlab.config import with_overrides
    from digitlab.presets import get_preset
    from digitlab.training import train

    spec = with_overrides(get_preset("seed"), train_samples=3000, epochs=3, validation_split=0.1)
    return train(spec, runs_dir=tmp_path_factory.mktemp("runs"), verbose=0, pictures=False)


def test_judge_without_thresholds_says_nothing():
    probabilities = np.array([[0.9, 0.1], [0.5, 0.5]])
    confidence_, confident, reasons = confidence.judge(probabilities, {})
    assert confidence_.tolist() == [0.9, 0.5]
    assert confident is None and reasons == [None, None]


def test_judge_flags_far_images_and_close_calls():
    thresholds = {confidence.MARGIN: 0.3, confidence.RESIDUAL: 5.0}
    probabilities = np.array([[0.9, 0.1], [0.55, 0.45], [0.99, 0.01], [0.5, 0.5]])
    residual = np.array([1.0, 1.0, 9.0, 9.0])
    _, confident, reasons = confidence.judge(
        probabilities, thresholds, {confidence.RESIDUAL: residual}
    )
    assert confident.tolist() == [True, False, False, False]
    assert reasons == [None, "unsure", "not a digit", "not a digit"]


def test_judge_reads_the_verifiers_two_scores():
    thresholds = {
        confidence.MARGIN: 0.1,
        confidence.OTHER: 0.5,
        confidence.DISAGREE: 0.9,
    }
    probabilities = np.array([[0.9, 0.1]] * 4)
    found = {
        confidence.OTHER: np.array([0.1, 0.9, 0.1, 0.9]),
        confidence.DISAGREE: np.array([0.1, 0.1, 0.95, 0.95]),
    }
    _, confident, reasons = confidence.judge(probabilities, thresholds, found)
    assert confident.tolist() == [True, False, False, False]
    assert reasons == [None, "not a digit", "unsure", "not a digit"]
    only_one = {confidence.OTHER: found[confidence.OTHER]}
    assert confidence.judge(probabilities, thresholds, only_one)[1] is None  # one is missing


def test_calibrate_run_computes_and_the_run_stores(monkeypatch, tmp_path):
    """Calibration hands its thresholds and directions to the run; it opens no file itself."""
    from types import SimpleNamespace

    import digitlab.data
    from digitlab.presets import get_preset

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 60)
    images = rng.integers(0, 256, (len(labels), 28, 28), dtype=np.uint8)
    images[:, 0, 0] = labels  # the "network" below reads the digit from this pixel
    split = (images, labels)
    monkeypatch.setattr(digitlab.data, "load_dataset", lambda name, data_dir=None: (split, split))
    stored, levels = [], []
    run = SimpleNamespace(
        path=tmp_path,
        dataset=SimpleNamespace(name="mnist"),
        preprocessing=SimpleNamespace(level_background=False),
        set_level_background=levels.append,
        spec=get_preset("seed"),
        class_names=[str(d) for d in range(10)],
        predict_proba=lambda x: np.eye(10)[x[:, 0, 0]] * 0.9 + 0.01,
        store_calibration=lambda thresholds, stats: stored.append((thresholds, stats)),
    )
    thresholds = confidence.calibrate_run(run)
    assert stored[0][0] is thresholds and thresholds["calibration_digits"] == 300
    assert confidence.MARGIN in thresholds and "set_quantile_confident" in thresholds
    # 300 training digits: too few for a verifier, so the margin judges alone
    assert stored[0][1] == {} and confidence.OTHER not in thresholds
    assert list(tmp_path.iterdir()) == []  # the run, not confidence, writes its files
    assert levels == [True]  # a run on the digits levels backgrounds once calibrated


@pytest.mark.parametrize("validation_split", [0.0, 0.1])
def test_calibration_is_on_the_test_splits_first_half_with_or_without_validation(
    validation_split,
):
    """The verifiers and companion train on the digits the network trained on (less a
    validation split); the thresholds come from the test's first half, whose writers the
    network never saw, and its second half stays for measuring."""
    x_train, y_train = np.arange(100), np.arange(100) % 10
    x_test, y_test = np.arange(100, 110), np.arange(10)
    train, calibration = confidence.calibration_split(
        x_train, y_train, (x_test, y_test), validation_split
    )
    trained_on = 100 if not validation_split else 90
    assert train[0].tolist() == list(range(trained_on)) and len(train[1]) == trained_on
    assert calibration[0].tolist() == [100, 101, 102, 103, 104]
    assert calibration[1].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_a_new_run_is_calibrated_on_writers_it_never_saw(calibrated_run, mnist):
    thresholds = calibrated_run.thresholds
    assert thresholds["calibration_digits"] == 5000  # the test's first half, not validation
    assert thresholds["flagged_correct_calibration"] <= 0.03
    assert {confidence.MARGIN, confidence.OTHER, confidence.DISAGREE} <= set(thresholds)
    assert (calibrated_run.path / STATS_FILE).is_file()
    weights = calibrated_run.confidence_stats()
    members = (verifiers.MEMBERS, verifiers.HIDDEN, len(calibrated_run.class_names) + 1)
    assert weights["verifier_kernel_1"].shape == members  # stacked, one more class each

    (_, _), (x_test, y_test) = mnist
    result = predict(calibrated_run, x_test[5000:6000])  # held out from calibration
    rows = result.to_list()
    correct = result.digits == y_test[5000:6000]
    flagged = np.array([not row["confident"] for row in rows])
    assert flagged[correct].mean() <= 0.05  # real digits it gets right: a few % at most
    assert {row["reason"] for row, f in zip(rows, flagged, strict=True) if f} <= {
        "unsure",
        "not a digit",
    }

    noise = ood.noise(100, np.random.default_rng(0))
    rows = predict(calibrated_run, noise).to_list()
    not_digits = [row["reason"] == "not a digit" for row in rows]
    assert np.mean(not_digits) > 0.9  # uniform noise is far from every digit
    assert all(row["confident"] is False for row in rows if row["reason"])


@pytest.mark.slow
def test_letters_and_shapes_are_flagged_more_often_than_digits(calibrated_run, mnist):
    (_, _), (x_test, _) = mnist
    real = np.mean([not r["confident"] for r in predict(calibrated_run, x_test[:500]).to_list()])
    rng = np.random.default_rng(1)
    fonts = ood.dejavu_fonts()[:2]
    fakes = np.concatenate([ood.scribbles(50, rng), ood.shapes(30, rng), ood.letters(fonts)])
    fake = np.mean([not r["confident"] for r in predict(calibrated_run, fakes).to_list()])
    assert fake > real + 0.2


@pytest.mark.slow
def test_prediction_sets_hold_held_out_digits_as_often_as_promised(calibrated_run, mnist):
    """On the test's second half (never trained on, never calibrated on), the run's stored
    95% sets hold the true digit within their sampling error, in each verdict group."""
    from test_confidence_sets import covered, lowest_plausible

    (_, _), (x_test, y_test) = mnist
    calibration = predict(calibrated_run, x_test[:5000]).to_list()  # its calibration digits
    rows = predict(calibrated_run, x_test[5000:]).to_list()
    hit = covered([row["prediction_set"] for row in rows], y_test[5000:])
    for group in (True, False):
        n = sum(row["confident"] is group for row in calibration)
        mask = np.array([row["confident"] is group for row in rows])
        coverage = calibrated_run.thresholds["set_coverage"]
        assert hit[mask].sum() >= lowest_plausible(int(mask.sum()), n, coverage), group
    sizes = np.array([len(row["prediction_set"]) for row in rows])
    confident = np.array([row["confident"] for row in rows])
    assert sizes[~confident].mean() > sizes[confident].mean()  # a doubtful answer widens
    shown = CliRunner().invoke(app, ["predict", str(calibrated_run.path), "--index", "0"])
    assert "95% set" in shown.output


@pytest.fixture
def old_run(calibrated_run, tmp_path):
    """A copy of the run as older versions wrote it: no thresholds, no confidence.npz."""
    path = tmp_path / calibrated_run.name
    shutil.copytree(calibrated_run.path, path)
    (path / STATS_FILE).unlink()
    config = json.loads((path / CONFIG_FILE).read_text())
    del config["thresholds"]
    (path / CONFIG_FILE).write_text(json.dumps(config))
    return path


@pytest.mark.slow
def test_an_old_run_predicts_with_confident_null_until_calibrated(old_run, mnist):
    (_, _), (x_test, _) = mnist
    row = predict(load_run(old_run), x_test[0]).to_list()[0]
    assert row["confident"] is None and row["reason"] is None
    assert row["confidence"] == pytest.approx(row["probability"])

    shown = CliRunner().invoke(app, ["predict", str(old_run), "--index", "0"])
    assert shown.exit_code == 0, shown.output
    assert "digitlab calibrate" in shown.output

    result = CliRunner().invoke(app, ["calibrate", str(old_run), "--json"])
    assert result.exit_code == 0, result.output
    stored = load_run(old_run).thresholds
    assert stored == json.loads(result.output)["thresholds"]
    assert stored["calibration_digits"] == 5000
    assert not list(old_run.glob(".*tmp"))  # written atomically: no temporary left behind
    row = predict(load_run(old_run), x_test[0]).to_list()[0]
    assert isinstance(row["confident"], bool)
    assert row["prediction_set"] and row["prediction_set"][0] == row["digit"]


@pytest.mark.slow
def test_a_run_calibrated_before_prediction_sets_gets_them_from_calibrate(old_run, mnist):
    (_, _), (x_test, _) = mnist
    CliRunner().invoke(app, ["calibrate", str(old_run)])
    config = json.loads((old_run / CONFIG_FILE).read_text())
    config["thresholds"] = {
        k: v for k, v in config["thresholds"].items() if not k.startswith("set_")
    }  # as issue 12's calibration left it
    (old_run / CONFIG_FILE).write_text(json.dumps(config))
    row = predict(load_run(old_run), x_test[0]).to_list()[0]
    assert isinstance(row["confident"], bool) and row["prediction_set"] is None
    shown = CliRunner().invoke(app, ["predict", str(old_run), "--index", "0"])
    assert "no prediction sets in this run" in shown.output
    assert "digitlab calibrate" in shown.output

    result = CliRunner().invoke(app, ["calibrate", str(old_run)])
    assert result.exit_code == 0 and "95% of the time" in " ".join(result.output.split())
    assert predict(load_run(old_run), x_test[0]).to_list()[0]["prediction_set"]


@pytest.mark.slow
def test_a_damaged_stats_file_is_a_clear_error(calibrated_run, tmp_path):
    path = tmp_path / "run"
    shutil.copytree(calibrated_run.path, path)
    (path / STATS_FILE).write_bytes(b"not numpy")
    result = CliRunner().invoke(app, ["predict", str(path), "--index", "0"])
    assert result.exit_code == 2
    assert "Error:" in result.output and "digitlab calibrate" in result.output
    assert "Traceback" not in result.output


def _three_ways(run, image):
    """The verdict for one image from the CLI's JSON, `digitlab.predict` and `POST /predict`."""
    from digitlab.api import create_app

    npy = run.path.parent / "one.npy"
    np.save(npy, image[np.newaxis])
    cli = CliRunner().invoke(app, ["predict", str(run.path), "--npy", str(npy), "--json"])
    assert cli.exit_code == 0, cli.output
    library = predict(run, image).to_list()[0]
    with TestClient(create_app(run)) as client:
        response = client.post("/predict", json={"pixels": image.tolist()})
    assert response.status_code == 200, response.text
    keys = ("confidence", "confident", "reason", "prediction_set")
    return [
        {k: row[k] for k in keys} for row in (json.loads(cli.output)[0], library, response.json())
    ]


@pytest.mark.slow
def test_cli_library_and_api_give_the_same_verdict(calibrated_run):
    for image in (
        ood.noise(1, np.random.default_rng(2))[0],
        ood.shapes(1, np.random.default_rng(3))[0],
    ):
        cli, library, api = _three_ways(calibrated_run, image)
        assert cli == library == api
        assert cli["confident"] is not None


@pytest.mark.slow
def test_every_path_applies_the_one_judge(calibrated_run, monkeypatch, mnist):
    """Replacing `confidence.judge` changes the CLI's, the library's and the API's answer."""
    (_, _), (x_test, _) = mnist

    def everything_is_unsure(probabilities, thresholds, residual=None):
        n = len(probabilities)
        return np.full(n, 0.5), np.zeros(n, bool), ["unsure"] * n

    monkeypatch.setattr(confidence, "judge", everything_is_unsure)
    verdicts = _three_ways(calibrated_run, x_test[0])
    for verdict in verdicts:  # the not-confident group's set: wider than the digit alone
        assert len(verdict.pop("prediction_set")) >= 1
    assert verdicts == [{"confidence": 0.5, "confident": False, "reason": "unsure"}] * 3
