"""What a run learns "not a digit" from, and the shifted digits it must still call digits.

Outlier exposure (Hendrycks, Mazeika & Dietterich 2019, https://arxiv.org/abs/1812.04606):
a network trained only on digits has no notion of anything else, so it is shown things that
are not digits. These are made here, on the fly, from a seed, as MNIST-style uint8 28×28
images (white on black):

- `fashion`: Fashion-MNIST's training images (Debian's dataset-fashion-mnist), half as they
  are, half framed as a drawing is (`preprocess`: thresholded, 20 px box, centre of mass);
- `strokes`: smooth random curves and zigzags, 1–3 of them, or a polygon's or a star's
  outline, drawn with a pen;
- `glyphs`: 3–5 straight strokes between random points of a jittered grid: corners,
  junctions and crossings, as written symbols have;
- `rings`: an ellipse or a polygon with 1–3 marks inside (a face, a ⊕): a 0 is empty;
- `blobs`: filled ellipses and polygons, 1–3 of them;
- `textures`: gratings, checkerboards and thresholded smooth noise over the whole frame;
- `speckle`: Gaussian noise and sparse dots;
- `overlays`: two digits of different classes drawn over each other, one shifted.

None of these is a letter, and no font is used: typeset letters and the DejaVu fonts are what
`benchmarks/bench_ood.py` measures with (`digitlab.ood`), and must stay unseen. `shifted`
makes the other side: digits as people's pens and scanners change them (stroke width, blur,
low resolution, elastic warps, faint ink, a drawing's thresholded strokes), so that shift
alone is not taken for "not a digit". None of MNIST-C's 15 corruptions (`digitlab.corruptions`)
is among them: those are kept for measuring.

From both, `digitlab.verifiers` fits the run's verifier, which the verdict
(`digitlab.confidence`) reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from digitlab.data import PIXEL_MAX
from digitlab.errors import DigitlabError
from digitlab.preprocess import BOX_FRACTION, FRAME, _centre, _fit_box, _ink_box, _thicken

CANVAS = 64  # px: drawings are made this size, then framed as a drawn digit is
KINDS = (
    *("fashion", "strokes", "glyphs", "rings", "blobs"),
    *("textures", "speckle", "overlays", "turned"),
)


# ------------------------------------------------------------------------------- not digits
def _framed(image: Image.Image | np.ndarray, level: int = PIXEL_MAX // 2) -> np.ndarray:
    """A white-on-black drawing framed as `preprocess` frames a digit's ink (its last steps:
    crop, thicken thin strokes, 20 px box, centre of mass), without its ink detection, which
    a clean synthetic drawing doesn't need and which takes ten times longer."""
    mask = np.asarray(image) > level
    if not mask.any():
        return np.zeros(FRAME, np.uint8)
    box = round(FRAME[0] * BOX_FRACTION)
    return _centre(_fit_box(_thicken(mask[_ink_box(mask)]), box), FRAME)


def _ndimage():
    """scipy.ndimage, imported on first use: `predict` and `serve` import this module (through
    confidence) but need none of it, and importing it costs ~0.5 s."""
    from scipy import ndimage

    return ndimage


def _pen(rng: np.random.Generator) -> int:
    return int(rng.integers(3, 8))


def _curve(rng: np.random.Generator) -> list[tuple[float, float]]:
    """A smooth curve: a quadratic Bézier through three random points, or a zigzag."""
    points = rng.uniform(6, CANVAS - 6, (3, 2))
    if rng.random() < 0.3:  # a zigzag: 3–7 sharp turns along a random line
        turns = int(rng.integers(3, 8))
        t = np.linspace(0, 1, turns + 1)[:, None]
        line = points[0] + t * (points[1] - points[0])
        normal = np.array([-(points[1] - points[0])[1], (points[1] - points[0])[0]])
        normal /= np.linalg.norm(normal) + 1e-9
        line += normal * rng.uniform(5, 14) * np.where(np.arange(turns + 1) % 2, 1, -1)[:, None]
        return [tuple(p) for p in np.clip(line, 2, CANVAS - 2)]
    t = np.linspace(0, 1, 24)[:, None]
    bezier = (1 - t) ** 2 * points[0] + 2 * (1 - t) * t * points[1] + t**2 * points[2]
    return [tuple(p) for p in bezier]


def _outline(rng: np.random.Generator) -> list[tuple[float, float]]:
    """A closed outline: a triangle, a pentagon, a hexagon or a five-pointed star (never an
    ellipse, which a 0 is, nor a square, which `digitlab.ood` keeps for measuring)."""
    corners = int(rng.choice([3, 5, 6, 10]))
    turn = np.linspace(0, 2 * math.pi, corners, endpoint=False) + rng.uniform(0, 2 * math.pi)
    radius = rng.uniform(0.22, 0.44) * CANVAS * np.ones(corners)
    if corners == 10:  # a star: every other corner pulled in
        radius[1::2] *= 0.45
    points = CANVAS / 2 + np.stack([radius * np.cos(turn), radius * np.sin(turn)], axis=1)
    return [tuple(p) for p in np.concatenate([points, points[:1]])]


def strokes(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` drawings of 1–3 smooth random curves or zigzags, or of an outline and a curve."""
    out = []
    for _ in range(n):
        image = Image.new("L", (CANVAS, CANVAS), 0)
        draw = ImageDraw.Draw(image)
        lines = [_curve(rng) for _ in range(rng.integers(1, 4))]
        if rng.random() < 0.25:
            lines = [_outline(rng), *lines[:1]] if rng.random() < 0.5 else [_outline(rng)]
        for line in lines:
            draw.line(line, fill=PIXEL_MAX, width=_pen(rng), joint="curve")
        out.append(_framed(image))
    return np.stack(out)


def glyphs(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` figures of 3–5 straight strokes, each from one point of a jittered grid (2 or 3
    columns, 3 rows) to another, mostly joined end to end, sometimes lifting the pen: the
    corners, junctions and crossings that written symbols are made of, drawn at random (no
    letter's template, no font). Some come out looking like a 4 or a 7: the verdict's
    thresholds are set on real digits, so those cost coverage, not honesty."""
    out = []
    for _ in range(n):
        image = Image.new("L", (CANVAS, CANVAS), 0)
        draw = ImageDraw.Draw(image)
        columns = np.linspace(12, CANVAS - 12, int(rng.integers(2, 4)))
        rows = np.linspace(8, CANVAS - 8, 3)
        grid = np.array([(x, y) for y in rows for x in columns])
        grid += rng.normal(0, 2.5, grid.shape)
        pen, at = _pen(rng), int(rng.integers(len(grid)))
        for _ in range(rng.integers(3, 6)):
            if rng.random() < 0.3:  # the pen lifts and starts elsewhere
                at = int(rng.integers(len(grid)))
            to = (at + int(rng.integers(1, len(grid)))) % len(grid)  # any other point
            draw.line([tuple(grid[at]), tuple(grid[to])], fill=PIXEL_MAX, width=pen)
            at = to
        out.append(_framed(image))
    return np.stack(out)


def rings(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` closed outlines (an ellipse or a polygon) with 1–3 marks inside: dots or short
    arcs. An empty ring is a 0; one with something in it (a face, a ⊕) is not."""
    out = []
    for _ in range(n):
        image = Image.new("L", (CANVAS, CANVAS), 0)
        draw = ImageDraw.Draw(image)
        half = rng.uniform(0.28, 0.44, 2) * CANVAS
        pen = _pen(rng)
        if rng.random() < 0.6:
            box = [CANVAS / 2 - half[0], CANVAS / 2 - half[1], CANVAS / 2 + half[0]]
            draw.ellipse([*box, CANVAS / 2 + half[1]], outline=PIXEL_MAX, width=pen)
        else:
            draw.line(_outline(rng), fill=PIXEL_MAX, width=pen, joint="curve")
        for _ in range(rng.integers(1, 4)):
            at = CANVAS / 2 + rng.uniform(-0.5, 0.5, 2) * half
            if rng.random() < 0.5:  # a dot
                r = rng.uniform(1.5, 4)
                draw.ellipse([*(at - r), *(at + r)], fill=PIXEL_MAX)
            else:  # a short arc or line
                start, length = rng.uniform(0, 360), rng.uniform(40, 180)
                r = rng.uniform(4, 0.6 * half.min())
                draw.arc([*(at - r), *(at + r)], start, start + length, fill=PIXEL_MAX, width=pen)
        out.append(_framed(image))
    return np.stack(out)


def blobs(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` drawings of 1–3 filled ellipses or polygons."""
    out = []
    for _ in range(n):
        image = Image.new("L", (CANVAS, CANVAS), 0)
        draw = ImageDraw.Draw(image)
        for _ in range(rng.integers(1, 4)):
            if rng.random() < 0.5:
                centre, radii = rng.uniform(16, CANVAS - 16, 2), rng.uniform(5, 18, 2)
                draw.ellipse([*(centre - radii), *(centre + radii)], fill=PIXEL_MAX)
            else:
                corners = rng.uniform(6, CANVAS - 6, (int(rng.integers(3, 7)), 2))
                draw.polygon([tuple(p) for p in corners], fill=PIXEL_MAX)
        out.append(_framed(image))
    return np.stack(out)


def textures(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` patterns over the whole frame: gratings, checkerboards, thresholded smooth noise."""
    rows, cols = np.mgrid[0 : FRAME[0], 0 : FRAME[1]].astype(np.float64)
    out = np.empty((n, *FRAME), np.uint8)
    for i in range(n):
        kind = i % 3
        if kind == 0:  # a grating at a random angle and period
            angle, period = rng.uniform(0, math.pi), rng.uniform(3, 9)
            wave = np.sin(2 * math.pi * (rows * math.cos(angle) + cols * math.sin(angle)) / period)
        elif kind == 1:  # a checkerboard
            size = rng.integers(2, 7)
            wave = ((rows // size + cols // size) % 2) * 2.0 - 1
        else:  # smooth noise, cut at a random level
            wave = _ndimage().gaussian_filter(rng.normal(size=FRAME), rng.uniform(1, 3))
            wave = wave / (np.abs(wave).max() + 1e-9) - rng.uniform(-0.3, 0.3)
        out[i] = np.where(wave > 0, PIXEL_MAX, 0)
    return out


def speckle(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` frames of Gaussian noise (random level and spread) or sparse bright dots."""
    out = np.empty((n, *FRAME), np.uint8)
    for i in range(n):
        if i % 2:
            noise = rng.normal(rng.uniform(0, 128), rng.uniform(20, 100), FRAME)
        else:
            noise = (rng.random(FRAME) < rng.uniform(0.02, 0.2)) * PIXEL_MAX
        out[i] = np.clip(noise, 0, PIXEL_MAX)
    return out


def fashion(n: int, rng: np.random.Generator, data_dir=None) -> np.ndarray:
    """`n` Fashion-MNIST training images: half as they are, half framed as a drawing."""
    from digitlab.data import DATASET_NAMES, DEFAULT_DATASET, load_dataset

    # the registry's other dataset, Fashion-MNIST: real images of things that are no digit
    clothes = next(name for name in DATASET_NAMES if name != DEFAULT_DATASET)
    try:
        (images, _), _ = load_dataset(clothes, data_dir=data_dir)
    except DigitlabError:  # not installed here (make system-deps): the other kinds stand in
        return np.zeros((0, *FRAME), np.uint8)
    chosen = images[rng.choice(len(images), n, replace=False)]
    half = n // 2
    framed = [_framed(image, level=int(rng.integers(20, 120))) for image in chosen[:half]]
    return np.concatenate([np.stack(framed), chosen[half:]]) if half else chosen


def overlays(digits: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator):
    """`n` pairs of digits of different classes, one shifted 4–9 px, drawn over each other."""
    first = rng.choice(len(digits), n)
    second = rng.choice(len(digits), n)
    same = labels[first] == labels[second]
    second[same] = (second[same] + 1) % len(digits)  # most now differ; the rest are rare
    out = np.empty((n, *FRAME), np.uint8)
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        shift = rng.integers(4, 10, 2) * rng.choice([-1, 1], 2)
        out[i] = np.maximum(digits[a], _ndimage().shift(digits[b], shift, order=0))
    return out


ASYMMETRIC = (2, 3, 4, 5, 6, 7, 9)  # digits that are no digit mirrored or turned sideways


def turned(digits: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator):
    """`n` digits of `ASYMMETRIC` classes mirrored, or turned a quarter either way: a
    mirrored 3 is an E, a 3 on its side an m; a turned 0, 1 or 8 would still be a digit."""
    chosen = rng.choice(np.flatnonzero(np.isin(labels, ASYMMETRIC)), n)
    out = np.empty((n, *FRAME), np.uint8)
    for i, j in enumerate(chosen):
        way = i % 3
        out[i] = digits[j][:, ::-1] if way == 0 else np.rot90(digits[j], 1 if way == 1 else -1)
    return out


def not_digits(
    n: int,
    digits: np.ndarray,
    labels: np.ndarray,
    seed: int = 0,
    data_dir=None,
) -> dict[str, np.ndarray]:
    """About `n` non-digits of every kind (`KINDS`), made from `seed`."""
    rng = np.random.default_rng(seed)
    weight = {"fashion": 0.2, "strokes": 0.11, "glyphs": 0.25, "rings": 0.05, "blobs": 0.1}
    weight |= {"textures": 0.05, "speckle": 0.05, "overlays": 0.15, "turned": 0.2}
    share = {kind: w / sum(weight.values()) for kind, w in weight.items()}  # of the n
    makers: dict[str, Callable[[int], np.ndarray]] = {
        "fashion": lambda k: fashion(k, rng, data_dir),
        "strokes": lambda k: strokes(k, rng),
        "glyphs": lambda k: glyphs(k, rng),
        "rings": lambda k: rings(k, rng),
        "blobs": lambda k: blobs(k, rng),
        "textures": lambda k: textures(k, rng),
        "speckle": lambda k: speckle(k, rng),
        "overlays": lambda k: overlays(digits, labels, k, rng),
        "turned": lambda k: turned(digits, labels, k, rng),
    }
    return {kind: makers[kind](max(1, round(n * share[kind]))) for kind in KINDS}


# ------------------------------------------------------------------------------ shifted digits
SHIFTS = ("thicker", "thinner", "blurred", "low_resolution", "elastic", "faint", "drawn")


def shifted(digits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each digit changed by one shift of `SHIFTS` in turn, its strength drawn from `rng`."""
    x = digits.astype(np.float64) / PIXEL_MAX
    out = np.empty_like(x)
    for k, shift in enumerate(SHIFTS):
        rows = np.arange(k, len(x), len(SHIFTS))
        out[rows] = SHIFT_FUNCTIONS[shift](x[rows], rng)
    return np.rint(np.clip(out, 0, 1) * PIXEL_MAX).astype(np.uint8)


def _thicker(x, rng):
    return _ndimage().grey_dilation(x, size=(1, 2, 2))


def _thinner(x, rng):
    thin = _ndimage().grey_erosion(x, size=(1, 2, 2))
    return np.where(thin.sum(axis=(1, 2), keepdims=True) > 10, thin, x)  # not erased away


def _blurred(x, rng):
    blurred = _ndimage().gaussian_filter(x, (0, 1, 1))
    return blurred / np.maximum(blurred.max(axis=(1, 2), keepdims=True), 1e-6)


def _low_resolution(x, rng):
    size = int(rng.integers(10, 16))
    small = _ndimage().zoom(x, (1, size / FRAME[0], size / FRAME[1]), order=1)
    return _ndimage().zoom(small, (1, FRAME[0] / size, FRAME[1] / size), order=1)[
        :, : FRAME[0], : FRAME[1]
    ]


def _elastic(x, rng, alpha: float = 2.5, sigma: float = 3.0):
    """Simard et al. 2003's elastic warp: smoothed random displacements of ~`alpha` px."""
    n = len(x)
    field = _ndimage().gaussian_filter(rng.uniform(-1, 1, (2, n, *FRAME)), (0, 0, sigma, sigma))
    field *= alpha / (np.abs(field).max(axis=(2, 3), keepdims=True) + 1e-9)
    rows, cols = np.mgrid[0 : FRAME[0], 0 : FRAME[1]]
    index = np.arange(n)[:, None, None] * np.ones(FRAME)
    coords = np.stack([index, rows + field[0], cols + field[1]])
    return _ndimage().map_coordinates(x, coords, order=1, cval=0.0)


def _faint(x, rng):
    return x * rng.uniform(0.3, 0.7, (len(x), 1, 1))


def _drawn(x, rng, factor: int = 4):
    """Strokes as a drawing's: thresholded at `factor`× the size (bilinear), then each
    factor×factor block averaged (the downscale's anti-aliasing)."""
    n, height, width = x.shape
    rows, cols = _bilinear(height, factor), _bilinear(width, factor)
    big = (rows @ x.astype(np.float32) @ cols.T) > 0.5  # two small matrix products per image
    return big.reshape(n, height, factor, width, factor).mean(axis=(2, 4))


def _bilinear(size: int, factor: int) -> np.ndarray:
    """The (size·factor)×size matrix of bilinear upsampling (pixel centres aligned)."""
    at = np.clip((np.arange(size * factor) + 0.5) / factor - 0.5, 0, size - 1)
    low = np.floor(at).astype(np.intp)
    high = np.minimum(low + 1, size - 1)
    matrix = np.zeros((size * factor, size), np.float32)
    np.add.at(matrix, (np.arange(size * factor), low), 1 - (at - low))
    np.add.at(matrix, (np.arange(size * factor), high), at - low)
    return matrix


SHIFT_FUNCTIONS = {
    "thicker": _thicker,
    "thinner": _thinner,
    "blurred": _blurred,
    "low_resolution": _low_resolution,
    "elastic": _elastic,
    "faint": _faint,
    "drawn": _drawn,
}
