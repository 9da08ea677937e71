"""Preprocessing against hand-made images whose right answers are known, and real MNIST.

The golden test writes real MNIST test digits out as the kind of picture a user sends (big,
black on white, anywhere in the frame) and checks the whole path brings them back to what
the model was trained on.
"""

from __future__ import annotations

import numpy as np
import pytest
from images import draw_digit, drawn_big, encode, png_header
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from digitlab.errors import ImageError
from digitlab.preprocess import load_image, preprocess, save_preview, stroke_width


def centre_of_mass(array: np.ndarray) -> np.ndarray:
    return np.array(ndi.center_of_mass(array.astype(float)))


def ink_box(array: np.ndarray) -> tuple[int, int]:
    rows, cols = np.flatnonzero(array.any(axis=1)), np.flatnonzero(array.any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


# --- refusing what isn't a digit -----------------------------------------------------------


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (280, 280), 255),
        Image.new("L", (280, 280), 0),
        Image.new("RGBA", (280, 280), (0, 0, 0, 0)),
        Image.fromarray(
            np.random.default_rng(0).normal(128, 20, (300, 300)).clip(0, 255).astype(np.uint8)
        ),
        Image.fromarray(np.tile(np.linspace(0, 255, 400), (300, 1)).astype(np.uint8)),
    ],
    ids=["white", "black", "transparent", "noise", "gradient"],
)
def test_an_empty_image_is_refused_with_no_digit_found(image):
    with pytest.raises(ImageError, match="no digit found"):
        preprocess(load_image(encode(image)))


def test_a_huge_image_is_refused_before_it_is_decoded():
    # The header says 4097×4097 and no pixel data follows: decoding would fail as truncated,
    # so refusing for size proves the check came first.
    with pytest.raises(ImageError, match="over the limit of 4096×4096 pixels"):
        load_image(png_header(4097, 4097))


def test_a_decompression_bomb_is_refused():
    with pytest.raises(ImageError, match="limit of 4096×4096 pixels"):
        load_image(png_header(100_000, 100_000))  # 10^10 pixels claimed in 60 bytes
    with pytest.raises(ImageError, match="limit of 1,000 pixels"):
        load_image(encode(draw_digit(1)), max_pixels=1000)


def test_a_real_oversized_image_is_refused():
    huge = encode(Image.new("1", (5000, 4000)))  # compresses to a few KB
    with pytest.raises(ImageError, match="5000×4000 pixels"):
        load_image(huge)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a supported image"),
        (b"%PDF-1.4\n" + bytes(200), "not a supported image"),
        (encode(Image.new("L", (64, 64)), "TIFF"), "not a supported image"),
    ],
    ids=["empty", "text", "pdf", "tiff"],
)
def test_what_is_not_a_supported_image_is_refused(data, message):
    with pytest.raises(ImageError, match=message):
        load_image(data)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_truncated_image_is_refused(fmt):
    data = encode(draw_digit(3).convert("RGB"), fmt)
    with pytest.raises(ImageError, match="truncated"):
        load_image(data[: len(data) // 2])


def test_a_file_over_the_byte_limit_is_refused(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(encode(draw_digit(3)))
    with pytest.raises(ImageError, match="over the"):
        load_image(path, max_bytes=100)
    with pytest.raises(ImageError, match="over the"):
        load_image(path.read_bytes(), max_bytes=100)
    with pytest.raises(ImageError, match="no image file"):
        load_image(tmp_path / "missing.png")


# --- MNIST's geometry ----------------------------------------------------------------------


@pytest.mark.parametrize("corner", [(5, 5), (200, 10), (10, 190), (190, 200)])
def test_an_off_centre_digit_ends_with_its_centre_of_mass_at_the_centre(corner):
    image = Image.new("L", (280, 280), 255)
    x, y = corner
    ImageDraw.Draw(image).line([(x, y), (x + 60, y), (x + 20, y + 80)], fill=0, width=9)
    out = preprocess(image)
    # MNIST's convention: the centre of mass at (14, 14) (its test set: 14.0 ± 0.3).
    assert np.all(np.abs(centre_of_mass(out) - 14.0) <= 1.0)


@pytest.mark.parametrize("horizontal", [True, False])
def test_a_long_stroke_comes_out_20_pixels_long(horizontal):
    image = Image.new("L", (400, 300), 255)
    xy = [(50, 150), (350, 150)] if horizontal else [(200, 20), (200, 280)]
    ImageDraw.Draw(image).line(xy, fill=0, width=24)
    height, width = ink_box(preprocess(image))
    long_side, short_side = (width, height) if horizontal else (height, width)
    assert abs(long_side - 20) <= 1
    assert short_side < 8  # the aspect ratio is kept, not stretched to a square


def test_black_on_white_gives_the_same_28x28_as_white_on_black():
    dark_ink = preprocess(draw_digit(5, ink=0, paper=255))
    light_ink = preprocess(draw_digit(5, ink=255, paper=0))
    np.testing.assert_array_equal(dark_ink, light_ink)
    assert dark_ink[0].max() == 0 and dark_ink.max() > 200  # white digit, black border


@pytest.mark.parametrize("ink", [0, 255], ids=["black-ink", "white-ink"])
def test_a_transparent_background_counts_as_paper(ink):
    alpha = 255 - np.asarray(draw_digit(4))  # opaque where drawn
    rgba = np.zeros((280, 280, 4), np.uint8)
    rgba[..., :3] = ink
    rgba[..., 3] = alpha
    out = preprocess(load_image(encode(Image.fromarray(rgba, "RGBA"))))
    np.testing.assert_array_equal(out, preprocess(draw_digit(4)))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP"])
def test_every_supported_format_gives_the_same_digit(fmt):
    reference = preprocess(draw_digit(2)).astype(float)
    out = preprocess(load_image(encode(draw_digit(2).convert("RGB"), fmt))).astype(float)
    assert np.abs(out - reference).mean() < 8  # lossy formats move edges a little


def test_photo_noise_and_uneven_lighting_are_thresholded_away():
    rng = np.random.default_rng(0)
    ink = 1 - np.asarray(draw_digit(7).resize((900, 900)), dtype=float) / 255
    photo = np.zeros((1200, 1600))
    photo[150:1050, 350:1250] = ink
    paper = np.linspace(110, 235, 1600)[None, :] * (
        1 - 0.4 * np.linspace(-1, 1, 1200)[:, None] ** 2
    )
    pixels = paper * (1 - photo) + 40 * photo + rng.normal(0, 12, photo.shape)
    jpeg = encode(Image.fromarray(pixels.clip(0, 255).astype(np.uint8)), "JPEG", quality=70)
    out = preprocess(load_image(jpeg)) > 127
    clean = preprocess(draw_digit(7)) > 127
    assert (out & clean).sum() / (out | clean).sum() > 0.6  # same strokes, not a blob


def test_thin_strokes_are_thickened_to_survive_the_downscale():
    out = preprocess(draw_digit(0, width=1))
    assert out.max() > 200  # a 1-px line in 280 px would otherwise average to a faint smudge
    assert stroke_width(out > 127) >= 2.0


def test_an_mnist_style_28x28_passes_through_almost_unchanged(mnist):
    (_, _), (x_test, _) = mnist
    out = preprocess(Image.fromarray(x_test[0]))
    assert np.corrcoef(out.ravel(), x_test[0].ravel())[0, 1] > 0.9


def test_save_preview_writes_the_enlarged_28x28(tmp_path):
    digit = preprocess(draw_digit(8))
    path = save_preview(digit, tmp_path / "seen.png", scale=10)
    with Image.open(path) as preview:
        assert preview.size == (280, 280)
        np.testing.assert_array_equal(np.asarray(preview)[::10, ::10], digit)
    assert [p.name for p in tmp_path.iterdir()] == ["seen.png"]  # no temporary left behind


# --- with the trained notebook network -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("width", [1, 3, 18, 40])
def test_drawn_digits_are_recognized_at_any_stroke_width(trained_run, width):
    images = np.stack([preprocess(draw_digit(d, width=width)) for d in range(10)])
    assert list(trained_run.predict_proba(images).argmax(axis=1)) == list(range(10))


@pytest.mark.slow
def test_golden_real_mnist_digits_drawn_big_anywhere_are_recognized(trained_run, mnist):
    """The first 200 test digits as 280×280 black-on-white PNGs, random scale and offset."""
    (_, _), (x_test, y_test) = mnist
    images = [preprocess(load_image(png)) for png in drawn_big(x_test[:200])]
    predicted = trained_run.predict_proba(np.stack(images)).argmax(axis=1)
    accuracy = float((predicted == y_test[:200]).mean())
    assert accuracy >= 0.97, f"{accuracy:.1%} of 200 real digits recognized after preprocessing"
