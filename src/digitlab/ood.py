"""Images that are not digits, made offline, to measure the "not a digit" verdict.

Four families, each as MNIST-style uint8 28×28 images (white on black) that went through the
same preprocessing as an uploaded or drawn image (`digitlab.preprocess.preprocess`: ink
detection, crop, 20 px box, centre of mass), except uniform noise, which is already 28×28:

- `letters`: typeset capital letters A–Z in the DejaVu fonts installed on the machine
  (Debian's fonts-dejavu-core; see scripts/system-deps.sh). Some look like digits (O, I, S,
  Z, B, G): no one can blame a model for reading an O as a 0, and they stay in the count.
- `scribbles`: random strokes: polylines and curves with random turns, 1–4 strokes.
- `noise`: uniform noise, every pixel 0–255.
- `shapes`: a circle, a square or a cross, random size, line width and rotation.

`benchmarks/bench_ood.py` reports the fraction of each family a run flags. `typeset_digits`
gives the other side, digits in the same fonts (`benchmarks/bench_verdict.py`). None of these
is ever trained on: the "not a digit" side learns from `digitlab.outliers`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from digitlab.data import PIXEL_MAX
from digitlab.preprocess import FRAME, preprocess

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
CANVAS = 280  # the drawing page's canvas, in pixels
FAMILIES = ("letters", "scribbles", "noise", "shapes")


def dejavu_fonts() -> list[Path]:
    """The DejaVu TrueType fonts installed (empty when fonts-dejavu-core is missing)."""
    return sorted(FONT_DIR.glob("DejaVu*.ttf")) if FONT_DIR.is_dir() else []


def _canvas() -> tuple[Image.Image, ImageDraw.ImageDraw]:
    image = Image.new("L", (CANVAS, CANVAS), 0)
    return image, ImageDraw.Draw(image)


def _typeset(characters: str, fonts: list[Path] | None) -> np.ndarray:
    """Each character in each font, white on black, preprocessed: font by font."""
    out = []
    for path in dejavu_fonts() if fonts is None else fonts:
        font = ImageFont.truetype(str(path), 180)
        for character in characters:
            image, draw = _canvas()
            mid = CANVAS // 2
            draw.text((mid, mid), character, fill=PIXEL_MAX, font=font, anchor="mm")
            out.append(preprocess(image))
    return np.stack(out) if out else np.zeros((0, *FRAME), np.uint8)


def letters(fonts: list[Path] | None = None) -> np.ndarray:
    """A–Z in each font, white on black, preprocessed: 26 × len(fonts) images."""
    return _typeset("ABCDEFGHIJKLMNOPQRSTUVWXYZ", fonts)


def typeset_digits(fonts: list[Path] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """0–9 in each font, preprocessed, and their labels: digits, but not handwritten ones
    (`benchmarks/bench_verdict.py` measures how many of these the verdict flags)."""
    digits = "0123456789"
    images = _typeset(digits, fonts)
    return images, np.tile(np.arange(len(digits)), len(images) // len(digits))


def scribbles(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` random scribbles: 1–4 strokes, each a wandering line of 3–12 segments."""
    out = []
    for _ in range(n):
        image, draw = _canvas()
        for _ in range(rng.integers(1, 5)):
            points = [tuple(rng.uniform(30, CANVAS - 30, 2))]
            heading = rng.uniform(0, 2 * math.pi)
            for _ in range(rng.integers(3, 13)):
                heading += rng.normal(0, 1.2)
                step = rng.uniform(15, 70)
                x, y = points[-1]
                x = float(np.clip(x + step * math.cos(heading), 5, CANVAS - 5))
                y = float(np.clip(y + step * math.sin(heading), 5, CANVAS - 5))
                points.append((x, y))
            draw.line(points, fill=PIXEL_MAX, width=int(rng.integers(10, 26)), joint="curve")
        out.append(preprocess(image))
    return np.stack(out)


def noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` images of uniform noise, every pixel 0–255."""
    return rng.integers(0, PIXEL_MAX + 1, (n, *FRAME), dtype=np.uint8)


def _rotated(points: list[tuple[float, float]], angle: float) -> list[tuple[float, float]]:
    c, s, m = math.cos(angle), math.sin(angle), CANVAS / 2
    return [(m + (x - m) * c - (y - m) * s, m + (x - m) * s + (y - m) * c) for x, y in points]


def shapes(n: int, rng: np.random.Generator) -> np.ndarray:
    """`n` outlines of circles, squares and crosses in turn, drawn as a pen would."""
    out = []
    for i in range(n):
        image, draw = _canvas()
        half = rng.uniform(50, 120)
        width = int(rng.integers(10, 26))
        m = CANVAS / 2
        angle = rng.uniform(0, math.pi / 2)
        kind = i % 3
        if kind == 0:  # circle
            draw.ellipse((m - half, m - half, m + half, m + half), outline=PIXEL_MAX, width=width)
        elif kind == 1:  # square
            corners = [(m - half, m - half), (m + half, m - half), (m + half, m + half)]
            corners += [(m - half, m + half), (m - half, m - half)]
            draw.line(_rotated(corners, angle), fill=PIXEL_MAX, width=width, joint="curve")
        else:  # cross: two strokes through the centre, a "+" or an "x" by its rotation
            for a, b in (((m - half, m), (m + half, m)), ((m, m - half), (m, m + half))):
                draw.line(_rotated([a, b], angle), fill=PIXEL_MAX, width=width)
        out.append(preprocess(image))
    return np.stack(out)


def generate(n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """Every family: letters in all installed DejaVu fonts, and `n` of each other family."""
    rng = np.random.default_rng(seed)
    makers: dict[str, Callable[[], np.ndarray]] = {
        "letters": letters,
        "scribbles": lambda: scribbles(n, rng),
        "noise": lambda: noise(n, rng),
        "shapes": lambda: shapes(n, rng),
    }
    return {family: makers[family]() for family in FAMILIES}
