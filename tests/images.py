"""Hand-made digit images shared by the preprocessing, API and browser tests (and by
benchmarks/bench_time_to_accuracy.py, which scores runs on the same checks)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw

# Polylines and ellipses on a 280×280 canvas that a person would read as each digit.
STROKES = {
    0: [("ellipse", (90, 40, 190, 240))],
    1: [("line", [(150, 40), (130, 240)])],
    2: [("line", [(90, 90), (110, 50), (160, 40), (190, 80), (180, 130), (90, 240), (200, 240)])],
    3: [("line", [(90, 50), (190, 50), (130, 130), (190, 170), (170, 230), (90, 235)])],
    4: [("line", [(170, 240), (170, 40), (80, 170), (210, 170)])],
    5: [("line", [(190, 40), (100, 40), (95, 130), (160, 120), (195, 170), (170, 230), (90, 235)])],
    6: [
        ("line", [(180, 40), (110, 120), (95, 190), (120, 240), (180, 230), (185, 170), (100, 170)])
    ],
    7: [("line", [(80, 40), (200, 40), (120, 240)])],
    8: [("ellipse", (100, 40, 180, 130)), ("ellipse", (90, 130, 190, 240))],
    9: [("ellipse", (90, 40, 190, 130)), ("line", [(188, 90), (170, 240)])],
}


def draw_digit(digit: int, width: int = 18, ink: int = 0, paper: int = 255) -> Image.Image:
    """A 280×280 grayscale drawing of `digit`, strokes `width` px wide."""
    image = Image.new("L", (280, 280), paper)
    pen = ImageDraw.Draw(image)
    for kind, xy in STROKES[digit]:
        if kind == "line":
            pen.line(xy, fill=ink, width=width, joint="curve")
        else:
            pen.ellipse(xy, outline=ink, width=width)
    return image


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height but holds almost no data: a bomb's shape."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    )


def drawn_big(digits, seed: int = 2024) -> list[bytes]:
    """28×28 digits (white on black, as MNIST) as 280×280 black-on-white PNGs, each drawn
    3–10× larger at a random offset, as a photo or a drawing page would give them."""
    rng = np.random.default_rng(seed)
    images = []
    for digit in digits:
        size = int(rng.integers(84, 281))  # the 28×28 frame drawn 3–10× larger
        canvas = Image.new("L", (280, 280), 0)
        offset = tuple(int(v) for v in rng.integers(0, 280 - size + 1, size=2))
        canvas.paste(Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR), offset)
        images.append(encode(Image.fromarray(255 - np.asarray(canvas))))
    return images
