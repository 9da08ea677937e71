"""Prediction inputs: one image or many take the same path; bad arrays are refused."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from digitlab.errors import DataError, DigitlabError, ImageError
from digitlab.prediction import (
    as_batch,
    gather_inputs,
    load_image_files,
    load_npy,
    parse_indices,
    predict,
    to_pixels,
)


def test_single_images_and_batches_become_uint8_batches():
    image = np.arange(784, dtype=np.uint8).reshape(28, 28)
    assert as_batch(image).shape == (1, 28, 28)
    assert as_batch(image.reshape(784)).shape == (1, 28, 28)
    assert as_batch(np.stack([image] * 3).reshape(3, 784)).shape == (3, 28, 28)
    np.testing.assert_array_equal(as_batch(image)[0], image)


def test_float_images_in_zero_one_are_the_notebooks_scaled_pixels():
    image = np.zeros((28, 28), np.float32)
    image[0, 0], image[1, 1] = 1.0, 0.5
    batch = as_batch(image)
    assert batch.dtype == np.uint8 and batch[0, 0, 0] == 255 and batch[0, 1, 1] == 128


def test_the_pixel_rule_reads_integers_as_0_255_and_unit_floats_as_x_over_255():
    assert to_pixels(np.array([0, 1, 255])).tolist() == [0, 1, 255]  # integers: 0–255
    assert to_pixels(np.array([0.0, 0.8, 1.0])).tolist() == [0, 204, 255]  # floats in 0–1
    assert to_pixels(np.array([0.0, 0.8, 200.0])).tolist() == [0, 1, 200]  # floats: 0–255
    assert to_pixels(np.array([0.0, 0.8, 1.0])).dtype == np.uint8


@pytest.mark.parametrize(
    ("pixels", "brightest"),
    [([0.8] * 784, 204), ([[0.8] * 28] * 28, 204), ([0.0] * 783 + [1.0], 255), ([9] * 784, 9)],
)
def test_float_pixels_mean_the_same_in_the_library_and_the_http_api(pixels, brightest):
    from digitlab.api import pixels_to_image

    served = pixels_to_image(pixels)
    np.testing.assert_array_equal(served, as_batch(np.array(pixels))[0])
    assert served.dtype == np.uint8 and served.max() == brightest


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((5, 27, 27)), "N×28×28 or N×784, got 5×27×27"),
        (np.zeros((0, 784)), "got 0×784"),
        (np.full((1, 784), 300.0), "must be between 0 and 255"),
        (np.full((1, 784), -1), "must be between 0 and 255"),
        (np.full((1, 784), -0.5), "got -0.5–-0.5"),
        (np.full((1, 784), np.nan), "NaN"),
        (np.full((1, 784), np.inf), "infinity"),
        (np.full((1, 784), True), "must be numbers"),
        (np.full((1, 784), "7"), "must be numbers"),
    ],
)
def test_bad_arrays_are_refused(array, message):
    with pytest.raises(DataError, match=message):
        as_batch(array)


def test_npy_files_are_read_and_checked(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((4, 784), np.uint8))
    assert load_npy(good).shape == (4, 28, 28)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 100)))
    with pytest.raises(DataError, match="bad.npy: images must be shaped"):
        load_npy(bad)
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="junk.npy is not a readable .npy"):
        load_npy(tmp_path / "junk.npy")
    with pytest.raises(DataError, match="nope.npy not found"):
        load_npy(tmp_path / "nope.npy")


def test_raw_image_files_are_resized_only(tmp_path):
    pixels = np.zeros((56, 56), np.uint8)
    pixels[10:46, 26:30] = 255
    Image.fromarray(pixels).save(tmp_path / "one.png")
    batch = load_image_files([tmp_path / "one.png"], raw=True)
    assert batch.shape == (1, 28, 28)
    assert batch[0, 14, 14] > 200 and batch[0, 14, 2] == 0  # the bar stays where it was


def test_missing_image_is_named(tmp_path):
    with pytest.raises(ImageError, match="nope.png not found"):
        load_image_files([tmp_path / "nope.png"])


def test_indices_are_read_as_predict_takes_them():
    assert parse_indices(["0-2", "5,7", " 9 ", 4]) == [0, 1, 2, 5, 7, 9, 4]
    assert parse_indices(["-1"]) == [-1]  # a number, refused later as out of range
    with pytest.raises(DigitlabError, match=r"--index takes numbers like 0, .*got '0-3,x'"):
        parse_indices(["0-3,x"])


# What gather_inputs reads of a run: its dataset, image shape and class names.
MNIST_RUN = SimpleNamespace(
    dataset=SimpleNamespace(name="mnist"),
    image_shape=(28, 28),
    class_names=[str(digit) for digit in range(10)],
)


def test_inputs_are_gathered_in_order_with_their_names_and_true_labels(tmp_path, mnist):
    _, (x_test, y_test) = mnist
    np.save(tmp_path / "two.npy", x_test[5:7].reshape(2, 784))
    Image.fromarray(x_test[9]).save(tmp_path / "nine.png")
    inputs = gather_inputs(
        MNIST_RUN, [tmp_path / "nine.png"], ["0-1", "3"], npy=tmp_path / "two.npy", raw=True
    )
    assert inputs.sources == [
        "test[0]",
        "test[1]",
        "test[3]",
        "two.npy[0]",
        "two.npy[1]",
        str(tmp_path / "nine.png"),
    ]
    assert inputs.truths == [str(y_test[0]), str(y_test[1]), str(y_test[3]), None, None, None]
    assert inputs.images.shape == (6, 28, 28) and inputs.images.dtype == np.uint8
    np.testing.assert_array_equal(inputs.images[:3], x_test[[0, 1, 3]])
    np.testing.assert_array_equal(inputs.images[3:5], x_test[5:7])
    np.testing.assert_array_equal(inputs.images[5], x_test[9])  # raw: only resized, to 28×28


@pytest.mark.parametrize("index", ["10000", "-1", "3,10000"])
def test_an_index_outside_the_test_split_is_refused_by_name(mnist, index):
    wanted = index.split(",")[-1]
    with pytest.raises(DigitlabError, match=rf"^--index {wanted} is out of range: .* has 10000$"):
        gather_inputs(MNIST_RUN, indices=[index])


def test_nothing_to_predict_says_what_to_give():
    with pytest.raises(DigitlabError, match="nothing to predict: give image files, --index N"):
        gather_inputs(MNIST_RUN)


@pytest.mark.slow
def test_predicting_test_digit_zero_says_seven(trained_run, mnist):
    _, (x_test, y_test) = mnist
    one = predict(trained_run, x_test[0])
    assert one.digits.tolist() == [7]
    assert one.probabilities.sum() == pytest.approx(1.0)
    many = predict(trained_run, x_test[:200], sources=[f"t{i}" for i in range(200)])
    assert (many.digits == y_test[:200]).mean() > 0.95
    assert many.digits[0] == one.digits[0]
    assert many.to_list()[3]["input"] == "t3"
