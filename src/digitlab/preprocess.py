"""Any image of a digit → the 28×28 a model trained on MNIST expects.

MNIST digits are white on black, their ink's bounding box scaled (anti-aliased, aspect ratio
kept) so its long side is 20 px, then placed in a 28×28 frame with the centre of mass at the
centre (LeCun et al., http://yann.lecun.com/exdb/mnist/). A photo or a drawing is none of
these, which is why "98% on the test set" becomes "wrong on my own digit". `preprocess`
rebuilds those steps:

1. grayscale (a transparent background counts as paper);
2. tell ink from paper (the ink is the thin, contrasting minority) and invert dark ink;
3. blur noisy images, subtract the paper's lighting (a fitted smooth surface), threshold;
4. crop to the ink's bounding box, thickening strokes too thin to survive the downscale;
5. scale the long side to 20 px with anti-aliasing;
6. place in 28×28 with the centre of mass at the centre.

Each constant below says where its value comes from; most were measured on real MNIST digits
drawn large, and on synthetic photos (noise, lamp gradients, vignetting, thin pens).

`load_image` is the edge where untrusted bytes are checked: size, format and dimensions are
refused before any pixel is decoded.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops, ImageFilter, ImageOps

from digitlab.data import IMAGE_SHAPE, PIXEL_MAX
from digitlab.errors import ImageError
from digitlab.files import atomic_path

MAX_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 4096 * 4096
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP")  # no EPS/PSD/...: fewer decoders, less surface

WORK_SIZE = 512  # long side the steps run at: big photos are shrunk first, for speed
FRAME = IMAGE_SHAPE  # (28, 28): the frame MNIST's digits were placed in
BOX_FRACTION = 20 / FRAME[0]  # MNIST's size-normalisation box: 20 px of the 28 px frame
# MNIST's centre of mass sits at (14, 14) ± 0.3 in its 28×28 frame (measured on the test
# set): the frame's middle, which `_centre` uses for a frame of any size.
MIN_CONTRAST = 32  # of 255: weaker ink than this over the paper is noise, not a digit
MIN_STROKE = 0.09  # of the box's long side: MNIST's 10th-percentile stroke; see _thicken
FLAT_PAPER = 8  # of 255: a background this even needs no lighting correction
CLEAN_SIGMA = 2.0  # paper noise (std, of 255) above which the image is blurred before threshold
MIN_INK_PIXELS = 5  # the brightest level counts only if this many pixels reach it
MIN_EXTENT = 0.03  # the ink must span at least this share of the image's long side
NOISE_SIGMAS = 4.0  # the threshold stays this many noise deviations above the paper
NOISE_LAG = 4  # pixels; see _noise_sigma
SPECK_FRACTION = 0.05  # ink blobs smaller than this share of the largest one are noise
RESAMPLE = Image.Resampling.BILINEAR  # anti-aliased both ways (Pillow widens the filter to shrink)


def _ndimage():
    """scipy.ndimage, imported on first use (~0.5 s): `predict RUN --index` and `serve` import
    this module through the verdict without preprocessing an image."""
    from scipy import ndimage

    return ndimage


def load_image(
    source: bytes | str | Path, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS
) -> Image.Image:
    """Decode an image file, refusing anything unsafe or broken before decoding its pixels.

    Args:
        source: the file's bytes, or a path to it.
        max_bytes: largest file accepted, default 5 MiB.
        max_pixels: largest width × height accepted, default 4096×4096. The header is read
            first, so a decompression bomb is refused without being decompressed.

    Returns:
        The decoded image (first frame of an animation), turned upright per its EXIF tag.

    Raises:
        ImageError: missing, empty, too large, not PNG/JPEG/BMP/GIF/WebP, or truncated.
    """
    data = _read_bytes(source, max_bytes)
    if not data:
        raise ImageError("the image file is empty; send a PNG, JPEG, BMP, GIF or WebP image")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError:
        raise _too_many_pixels(max_pixels) from None
    except Exception:  # Pillow's parsers raise many types on malformed headers
        raise ImageError("not a supported image; send a PNG, JPEG, BMP, GIF or WebP file") from None
    width, height = image.size
    if width * height > max_pixels:
        raise _too_many_pixels(max_pixels, image.size)
    if width == 0 or height == 0:
        raise ImageError("the image has no pixels; send a non-empty image")
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # a phone photo's "this way up"
    except Exception:  # "image file is truncated", broken chunks, bad EXIF
        raise ImageError(
            "the image is truncated or corrupt; save it again and re-send the whole file"
        ) from None
    return image


def _read_bytes(source: bytes | str | Path, max_bytes: int) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"no image file at {path}")
        if path.stat().st_size > max_bytes:
            raise _too_big(path.stat().st_size, max_bytes)
        data = path.read_bytes()
    if len(data) > max_bytes:
        raise _too_big(len(data), max_bytes)
    return data


def _too_big(size: int, max_bytes: int) -> ImageError:
    return ImageError(
        f"the image is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:g} MiB limit; "
        "send a smaller file"
    )


def _too_many_pixels(max_pixels: int, size: tuple[int, int] | None = None) -> ImageError:
    what = f"{size[0]}×{size[1]} pixels" if size else "too many pixels"
    limit = "4096×4096" if max_pixels == MAX_PIXELS else f"{max_pixels:,}"
    return ImageError(f"the image is {what}, over the limit of {limit} pixels; shrink it first")


def preprocess(image: Image.Image, frame: tuple[int, int] = FRAME) -> np.ndarray:
    """Turn an image of one digit into a 28×28 uint8 array, white on black, MNIST-style.

    Ink polarity is detected (dark on light or light on dark), transparent pixels count as
    paper, and uneven lighting and noise are thresholded away. `frame` is the height and
    width the model reads (a run's `image_shape`); the digit's box keeps MNIST's 20/28 of it.

    Raises:
        ImageError: no digit found (a blank or nearly uniform image).
    """
    gray = _grayscale(image)
    if _ink_is_dark(gray):
        gray = ImageOps.invert(gray)
    mask = _ink_mask(gray)
    box = max(1, round(min(frame) * BOX_FRACTION))
    return _centre(_fit_box(_thicken(mask[_ink_box(mask)]), box), frame)


def _grayscale(image: Image.Image) -> Image.Image:
    """8-bit gray, at most WORK_SIZE on the long side; transparency becomes paper."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit or float gray: rescale
        values = np.asarray(image, dtype=np.float32)
        top = float(values.max())
        image = Image.fromarray(
            (values * (PIXEL_MAX / top) if top > 0 else values).astype(np.uint8)
        )
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        image = _flatten_transparency(image.convert("RGBA"))
    gray = image.convert("L")
    if max(gray.size) > WORK_SIZE:
        gray.thumbnail((WORK_SIZE, WORK_SIZE), Image.Resampling.BOX)
    return gray


def _flatten_transparency(rgba: Image.Image) -> Image.Image:
    """Composite over paper that contrasts with the opaque pixels (the ink) in it.

    A canvas drawing is often ink on a transparent background, and the ink may be dark or
    light, so the paper colour is chosen opposite to what the opaque pixels look like.
    """
    alpha = np.asarray(rgba.getchannel("A"))
    if alpha.min() == 255:
        return rgba  # opaque: converting to gray ignores the alpha channel
    opaque = np.asarray(rgba.convert("L"))[alpha > 127]
    paper = 255 if opaque.size == 0 or np.median(opaque) < 128 else 0
    background = Image.new("RGBA", rgba.size, (paper, paper, paper, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _ink_is_dark(gray: Image.Image) -> bool:
    """Whether the ink is darker than the paper around it.

    Ink is thin, high-contrast and a minority of the pixels, so the image minus a heavy blur
    of itself is skewed toward the ink's side; noise is symmetric and lighting gradients and
    vignetting blur away. The sign of the third moment is the answer. Runs at ~64 px.
    """
    factor = max(1, max(gray.size) // 64)
    small = gray.reduce(factor) if factor > 1 else gray
    local = small.filter(ImageFilter.GaussianBlur(radius=max(small.size) / 8))
    residual = np.asarray(small, dtype=np.float32) - np.asarray(local, dtype=np.float32)
    return float((residual**3).sum()) < 0


def _background(gray: Image.Image) -> Image.Image | int:
    """The paper's brightness alone: one level, or a smooth quadratic surface.

    A quadratic covers a lamp's gradient and a lens's vignetting. It is fitted at ~32 px by
    least squares, three times, each time leaving out pixels well above the fit (the ink).
    Unlike a grey opening it has no artefacts at the image's edges and no limit on stroke
    width. When the medians of a 3×3 grid of blocks agree, the paper is even (a canvas, a
    scan): the fit is skipped and the one level returned.
    """
    factor = max(1, min(gray.size) // 32)
    small = np.asarray(gray.reduce(factor) if factor > 1 else gray, dtype=np.float64)
    height, width = (max(1, n // 3) for n in small.shape)
    grid = np.resize(small[: 3 * height, : 3 * width], (3, height, 3, width)).swapaxes(1, 2)
    blocks = np.median(grid.reshape(9, -1), axis=1)
    if blocks.max() - blocks.min() <= FLAT_PAPER or min(small.shape) < 3:
        return int(np.median(blocks))
    rows, cols = np.mgrid[0 : 1 : small.shape[0] * 1j, 0 : 1 : small.shape[1] * 1j]
    terms = np.stack([np.ones_like(rows), rows, cols, rows**2, rows * cols, cols**2], axis=-1)
    terms, values = terms.reshape(-1, 6), small.ravel()
    paper = np.ones(values.shape, dtype=bool)
    for _ in range(3):
        coefficients = np.linalg.lstsq(terms[paper], values[paper], rcond=None)[0]
        residual = values - terms @ coefficients
        spread = 1.4826 * np.median(np.abs(residual[paper] - np.median(residual[paper])))
        paper = residual < 2 * spread + 2
    fit = np.clip(terms @ coefficients, 0, PIXEL_MAX).reshape(small.shape)
    return Image.fromarray(fit.astype(np.uint8)).resize(gray.size, Image.Resampling.BILINEAR)


def _ink_mask(gray: Image.Image) -> np.ndarray:
    """Which pixels are ink, given bright ink on darker paper.

    Noisy images (photos) are blurred first; clean ones (a canvas) are not, so a 1-px stroke
    keeps its full contrast. The paper's lighting is subtracted, then the threshold is
    Otsu's level, kept at least NOISE_SIGMAS noise deviations above the paper. Blobs much
    smaller than the largest are noise specks and are dropped.

    Raises:
        ImageError: nothing stands out from the paper.
    """
    noise = _noise_sigma(gray)
    if noise > CLEAN_SIGMA:
        gray = gray.filter(ImageFilter.GaussianBlur(radius=1))
        noise = _noise_sigma(gray)
    background = _background(gray)
    if isinstance(background, Image.Image):
        ink = ImageChops.subtract(gray, background)
    else:  # even paper: subtract one level (nothing, for light ink on black)
        ink = gray.point([max(0, v - background) for v in range(256)]) if background else gray
    counts = np.asarray(ink.histogram())
    paper = int(np.searchsorted(np.cumsum(counts), counts.sum() / 2))
    floor = paper + NOISE_SIGMAS * noise
    if _brightest_level(counts) < max(paper + MIN_CONTRAST, floor):
        raise no_digit_error()
    mask = np.asarray(ink) > max(_otsu_level(counts), floor)
    labels, count = _ndimage().label(mask, structure=np.ones((3, 3)))  # diagonal steps connect
    if count > 1:
        sizes = np.bincount(labels[mask])  # only ink pixels: a tenth of the image, or less
        keep = sizes >= SPECK_FRACTION * sizes.max()
        keep[0] = False
        if not keep[1:].all():
            mask = keep[labels]
    if max(mask[_ink_box(mask)].shape) < MIN_EXTENT * max(mask.shape):
        raise no_digit_error()
    return mask


def _noise_sigma(gray: Image.Image) -> float:
    """The noise's standard deviation, from pixels NOISE_LAG apart (Donoho's robust MAD).

    Differences cancel lighting gradients; taking the median ignores the ink's edges (a
    minority); the lag skips the correlation a blur leaves between neighbours.
    """
    pixels = np.asarray(gray, dtype=np.int16)[::4]  # every 4th row is plenty
    steps = np.abs(pixels[:, NOISE_LAG:] - pixels[:, :-NOISE_LAG]).ravel()
    if steps.size == 0:
        return 0.0
    return 1.4826 * float(np.median(steps)) / np.sqrt(2)


def _brightest_level(counts: np.ndarray) -> int:
    """The level that at least a few pixels reach (one hot pixel isn't ink)."""
    from_top = np.cumsum(counts[::-1])
    return PIXEL_MAX - int(np.searchsorted(from_top, MIN_INK_PIXELS))


def _ink_box(mask: np.ndarray) -> tuple[slice, slice]:
    """The bounding box of the ink, as slices (empty slices for an empty mask)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return slice(0, 0), slice(0, 0)
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _otsu_level(counts: np.ndarray) -> float:
    """The level that best splits a 256-bin histogram into two classes (Otsu, 1979)."""
    levels = np.arange(256)
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    mass_low = np.cumsum(counts * levels)
    mean_low = mass_low / np.maximum(weight_low, 1)
    mean_high = (mass_low[-1] - mass_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(np.argmax(between))


def no_digit_error() -> ImageError:
    """The one "no digit found" error, for files, uploads and blank pixels alike."""
    return ImageError(
        "no digit found: the image is blank or its ink is too faint; draw or photograph "
        "one digit, dark on light or light on dark"
    )


def stroke_width(mask: np.ndarray) -> float:
    """Estimate a binary drawing's stroke width in pixels: 2 × area / outline length."""
    padded = np.pad(mask, 1)
    inside = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
    inside &= padded[1:-1, :-2] & padded[1:-1, 2:]  # erosion by a cross, in numpy: faster
    outline = mask & ~inside
    return 2.0 * float(mask.sum()) / max(1, int(outline.sum()))


def _thicken(crop: np.ndarray) -> np.ndarray:
    """Dilate strokes that would come out thinner than MNIST's thinnest after scaling.

    A 1-px pen line in a 200-px drawing becomes a 0.1-px smudge in the 20-px box. Nine in
    ten MNIST digits have strokes at least MIN_STROKE of the box wide (median 0.13, measured
    on test digits drawn 10× larger), so the thinner ones are brought up to that. Without
    this, digits drawn with 1- and 3-px pens on a 280-px canvas were recognized 1 and 4
    times in 10; with it, 10 in 10 (the seed network).
    """
    target = MIN_STROKE * max(crop.shape)
    width = stroke_width(crop)
    if width >= target:
        return crop
    radius = (target - width) / 2
    pad = int(np.ceil(radius))
    padded = np.pad(crop, pad)
    return _ndimage().distance_transform_edt(~padded) <= radius


def _fit_box(crop: np.ndarray, box: int) -> np.ndarray:
    """Scale the ink's box so its long side is `box` px (MNIST: 20), keeping the aspect ratio,
    anti-aliased."""
    height, width = crop.shape
    scale = box / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(crop.astype(np.uint8) * PIXEL_MAX)
    return np.asarray(image.resize(size, RESAMPLE), dtype=np.float32)


def _centre(digit: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Place in a frame of `shape` (MNIST: 28×28) and shift (whole pixels, as MNIST did) so
    the centre of mass lands on the frame's middle ((14, 14) for MNIST)."""
    frame = np.zeros(shape, dtype=np.float32)
    height, width = digit.shape
    top, left = (shape[0] - height) // 2, (shape[1] - width) // 2
    frame[top : top + height, left : left + width] = digit
    row, col = _ndimage().center_of_mass(frame)
    shift = (round(shape[0] / 2 - row), round(shape[1] / 2 - col))
    frame = _ndimage().shift(frame, shift, order=0, mode="constant", cval=0.0)
    return np.clip(np.rint(frame), 0, PIXEL_MAX).astype(np.uint8)


def save_preview(array28: np.ndarray, path: str | Path, scale: int = 10) -> Path:
    """Write a 28×28 array as a PNG enlarged `scale` times (nearest neighbour), atomically.

    This is "what the model sees": white digit on black, blocky so each pixel is visible.
    """
    image = Image.fromarray(np.asarray(array28, dtype=np.uint8))
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return Path(path)


def to_png(array28: np.ndarray) -> bytes:
    """The 28×28 array as PNG bytes (for the HTTP API's "preprocessed" field)."""
    out = io.BytesIO()
    Image.fromarray(np.asarray(array28, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()
