"""Levelling a digit's background before a run's networks read it (issue 22).

An MNIST digit is ink on black: its 28 × 28 frame's outer ring is empty (the two outer rows
and columns average 0 in 88% of MNIST's 70,000 digits and at most 11.0 of 255 in any).
A photo's uneven light, a grey page, fog, a brightness offset or an inverted band put
stroke-level values where MNIST has black, and a network trained on MNIST reads them as
strokes: under MNIST-C's brightness and fog corruptions the notebook's network is right on
9–11% of the digits (RESULTS, "The verdict under shift").

`level_background` gives such a frame its black back: it subtracts what is wider than a
stroke (a grey-scale opening with a `WIDTH` × `WIDTH` square, which keeps a fog, an offset, a
band and removes the strokes) and stretches what is left, the ink, back to 0–255. A frame
whose ring is dark is left exactly as it is, so MNIST's own digits reach the network
unchanged, as do images `digitlab.preprocess` frames (their ink in a 20-pixel box at the
centre) unless their ink spills into the ring. A run levels when its
`config.json` says `preprocessing.level_background` (runs on the digits, trained since
issue 22); an older run reads its pixels as before.
"""

from __future__ import annotations

import numpy as np

from digitlab.data import DEFAULT_DATASET, PIXEL_MAX

BORDER = 2  # px: the frame's outer ring, empty in an MNIST-style digit
DARK = 14.0  # of 255: a ring brighter than this on average has a background to level; MNIST's
# brightest ring is 11.0, MNIST-C's faintest fog 17.3 (test digits 0–1,999, seed 0)
WIDTH = 9  # px: the opening's square, wider than a stroke


def levels_background(dataset: str) -> bool:
    """Whether a run on `dataset` levels backgrounds: the digits' frames are empty, while
    Fashion-MNIST's garments fill theirs to the edge."""
    return dataset == DEFAULT_DATASET


def has_background(images: np.ndarray) -> np.ndarray:
    """Whether each N×H×W image's outer `BORDER`-pixel ring averages above `DARK`."""
    images = np.asarray(images)
    ring = np.ones(images.shape[1:3], dtype=bool)
    ring[BORDER:-BORDER, BORDER:-BORDER] = False
    return images[:, ring].astype(np.float32).mean(axis=1) > DARK


def level_background(images: np.ndarray) -> np.ndarray:
    """The N×H×W images (0–255, any numeric dtype) with each background levelled to black.

    Frames without a background (`has_background` false) are returned as they are; the
    others lose what a `WIDTH`-pixel square fits inside and have their brightest remaining
    pixel stretched to 255. The result has the input's dtype and shape; the input is not
    changed.
    """
    images = np.asarray(images)
    levelled = has_background(images) if images.ndim == 3 and len(images) else None
    if levelled is None or not levelled.any():
        return images
    from scipy import ndimage  # ~0.5 s on first use, only when a frame needs it

    x = images[levelled].astype(np.float32)
    ink = x - ndimage.grey_opening(x, size=(1, WIDTH, WIDTH))
    top = ink.reshape(len(ink), -1).max(axis=1)
    ink *= (PIXEL_MAX / np.maximum(top, 1.0))[:, None, None]
    out = images.copy()
    out[levelled] = np.clip(ink, 0, PIXEL_MAX).astype(images.dtype)
    return out
