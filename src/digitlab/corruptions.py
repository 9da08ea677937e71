"""MNIST-C's 15 corruptions (Mu & Gilmer 2019, https://arxiv.org/abs/1906.02337), in NumPy.

Each takes uint8 digits (N×H×W, white on black, 0–255) and returns new ones of the same shape
and dtype. The settings are the ones the published MNIST-C dataset was made with (each
corruption's default severity in google-research/mnist-c's corruptions.py); the code is our
own, with NumPy, SciPy and no OpenCV, ImageMagick or scikit-image:

- noise: `shot_noise` (Poisson counts at 3 photons for full ink), `impulse_noise` (17% of the
  pixels set to black or white);
- blur: `glass_blur` (blur σ 0.7, two passes of swapping neighbouring pixels, blur again),
  `motion_blur` (a one-sided Gaussian streak, σ 3 px, at a random angle within ±45°);
- geometry, about the centre: `shear` (±0.4), `scale` (to 70%), `rotate` (±0.4 rad, 23°),
  `translate` (3 px across and 3 px down or up); `brightness` (+50% of full ink everywhere);
- added things: `stripe` (the outer quarters inverted), `fog` (a plasma fractal at 3× the
  digit's contrast), `spatter` (mud blobs), `dotted_line` and `zigzag` (across the digit);
- `canny_edges`: the digit's outline only (Canny 1986: σ 1, thresholds 0.1 and 0.2).

Deterministic: the random draws of image `index[i]` come from a generator seeded with
(`seed`, the corruption's name), at row `index[i]` of each table of draws. So a digit is
corrupted the same way whatever else is in its batch, and `digitlab robustness --samples N`
changes which digits are measured, never how one is corrupted.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable

import numpy as np

from digitlab.data import PIXEL_MAX
from digitlab.errors import DataError
from digitlab.validation import did_you_mean, printable

CORRUPTIONS = (  # MNIST-C's order and names
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "scale",
    "rotate",
    "brightness",
    "translate",
    "stripe",
    "fog",
    "spatter",
    "dotted_line",
    "zigzag",
    "canny_edges",
)

SHOT_PHOTONS = 3  # Poisson counts per unit of ink (severity 5 of 5)
IMPULSE_AMOUNT = 0.17  # share of pixels replaced by salt or pepper (severity 4)
GLASS = (0.7, 1, 2)  # blur σ, largest swap distance, swap passes (severity 1)
MOTION = (10, 3.0, 45.0)  # streak radius, its Gaussian σ (px), largest angle (°) (severity 1)
SHEAR, ROTATION, SHRINK, SHIFT = 0.4, 0.4, 0.7, 3  # severities 2, 2, 3, 3
BRIGHTEN = 0.5  # added to every pixel, 0–1 (severity 5)
FOG = (3.0, 1.4, 256, 32)  # strength, roughness decay, fractal size, maps drawn per seed
SPATTER = (0.65, 0.3, 1.0, 0.65, 1.5, 0.247)  # mean, sd, blur σ, cut, blob σ, mud (63 of 255)
LINE_WIDTH = 2.3  # a drawn line's profile: 1 on its centre, 0 at 1.45 px (MNIST-C's)
ZIGZAG = (2.0, 2.0, 5)  # half-period and amplitude (px), largest rise across the digit
CANNY = (1.0, 0.1, 0.2)  # smoothing σ, low and high gradient thresholds (scikit-image's)


# -------------------------------------------------------------------------------- the draws
class _Draws:
    """Random numbers keyed by image: image `index[i]` gets row `index[i]` of each table, so
    its draws don't depend on which other images share the batch."""

    def __init__(self, seed: int, name: str, index: np.ndarray) -> None:
        self._root = np.random.SeedSequence([seed, zlib.crc32(name.encode())])
        self._index = index
        self._rows = int(index.max()) + 1 if len(index) else 0

    def table(self, draw: Callable[[np.random.Generator, tuple], np.ndarray], *shape: int):
        """`draw(rng, (rows, *shape))`, one row per image index, the rows of the batch taken."""
        rng = np.random.default_rng(self._root.spawn(1)[0])
        return draw(rng, (self._rows, *shape))[self._index]

    def uniform(self, *shape: int, low: float = 0.0, high: float = 1.0) -> np.ndarray:
        return self.table(
            lambda rng, size: low + (high - low) * rng.random(size, dtype=np.float32), *shape
        )

    def integers(self, low: int, high: int, *shape: int) -> np.ndarray:
        return self.table(lambda rng, size: rng.integers(low, high, size, dtype=np.int16), *shape)

    def signs(self, *shape: int) -> np.ndarray:
        return np.where(self.integers(0, 2, *shape) == 1, 1.0, -1.0)

    def generator(self) -> np.random.Generator:
        """A generator for what all images share (the fog's pool of maps)."""
        return np.random.default_rng(self._root.spawn(1)[0])


# ----------------------------------------------------------------------------- helpers
def _blur(x: np.ndarray, sigma: float, mode: str = "nearest") -> np.ndarray:
    """Each image blurred on its own (σ 0 across the batch axis)."""
    from scipy import ndimage  # here: importing SciPy would slow `digitlab --help`

    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma), mode=mode)


def _sobel(x: np.ndarray, axis: int) -> np.ndarray:
    """Each image's Sobel derivative along `axis` (1: rows, 2: columns), unscaled as SciPy's.
    Not `ndimage.sobel` on the batch: it would smooth across neighbouring images too."""
    from scipy import ndimage

    across = 3 - axis
    derivative = ndimage.correlate1d(x, [-1.0, 0.0, 1.0], axis=axis)
    return ndimage.correlate1d(derivative, [1.0, 2.0, 1.0], axis=across)


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row and column coordinates, shaped to broadcast against N×H×W."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64)
    return rows[None], cols[None]


def _warp(x: np.ndarray, matrices: np.ndarray, shifts: np.ndarray | None = None) -> np.ndarray:
    """Each image resampled (bilinear, black outside) at `A @ (p - centre) + centre + shift`
    for each output pixel p = (column, row): the inverse map, as scikit-image's `warp` takes
    it. `matrices` is N×2×2 in (x, y) order, `shifts` N×2."""
    from scipy import ndimage

    n, height, width = x.shape
    rows, cols = _grid((height, width))
    cy, cx = (height - 1) / 2, (width - 1) / 2
    a = matrices[:, :, :, None, None]
    src_x = a[:, 0, 0] * (cols - cx) + a[:, 0, 1] * (rows - cy) + cx
    src_y = a[:, 1, 0] * (cols - cx) + a[:, 1, 1] * (rows - cy) + cy
    if shifts is not None:
        src_x, src_y = src_x + shifts[:, 0, None, None], src_y + shifts[:, 1, None, None]
    batch = np.broadcast_to(np.arange(n, dtype=np.float64)[:, None, None], src_x.shape)
    return ndimage.map_coordinates(x, [batch, src_y, src_x], order=1, mode="constant", cval=0.0)


def _segment_distance(shape: tuple[int, int], start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Each pixel's distance to each image's segment start→end (N×2 arrays of (x, y))."""
    rows, cols = _grid(shape)
    sx, sy = start[:, 0, None, None], start[:, 1, None, None]
    dx, dy = (end[:, 0] - start[:, 0])[:, None, None], (end[:, 1] - start[:, 1])[:, None, None]
    length2 = np.maximum(dx * dx + dy * dy, 1e-12)
    t = np.clip(((cols - sx) * dx + (rows - sy) * dy) / length2, 0, 1)
    return np.hypot(cols - sx - t * dx, rows - sy - t * dy)


def _line_ink(distance: np.ndarray) -> np.ndarray:
    """A drawn line's ink at a distance from its centre: 1 on it, fading to 0 by 1.45 px."""
    return np.clip(np.log(1 - np.minimum(distance, LINE_WIDTH - 1e-9) / LINE_WIDTH) + 1, 0, 1)


# ------------------------------------------------------------------------- the corruptions
def shot_noise(x: np.ndarray, draws: _Draws) -> np.ndarray:
    """Photon noise: each pixel a Poisson count of SHOT_PHOTONS × its ink, rescaled.

    Drawn by inverting the Poisson CDF at the pixel's keyed uniform draw. Pixels take 256
    levels, so each level's CDF is tabulated once, shifted by the level so that all of them
    make one sorted table, and one `searchsorted` finds every pixel's count."""
    from scipy import stats

    levels = np.rint(x * PIXEL_MAX).astype(np.intp)
    counts = np.arange(4 * SHOT_PHOTONS + 12)  # P(more) < 1e-7 at full ink
    means = np.arange(PIXEL_MAX + 1)[:, None] / PIXEL_MAX * SHOT_PHOTONS
    table = (stats.poisson.cdf(counts[None, :], means) + np.arange(PIXEL_MAX + 1)[:, None]).ravel()
    u = draws.uniform(*x.shape[1:])
    out = np.zeros_like(x)
    inked = levels > 0  # no ink, no photons: most pixels
    level = levels[inked]
    found = np.searchsorted(table, level + u[inked]) - level * len(counts)  # CDF values < u
    out[inked] = np.maximum(found, 0) / SHOT_PHOTONS
    return np.clip(out, 0, 1)


def impulse_noise(x: np.ndarray, draws: _Draws) -> np.ndarray:
    """Salt and pepper: IMPULSE_AMOUNT of the pixels, half set white, half black."""
    u = draws.uniform(*x.shape[1:])
    out = np.where(u < IMPULSE_AMOUNT / 2, 1.0, x)
    return np.where((u >= IMPULSE_AMOUNT / 2) & (u < IMPULSE_AMOUNT), 0.0, out)


def glass_blur(x: np.ndarray, draws: _Draws) -> np.ndarray:
    """Blur, then sweep the image bottom-right to top-left swapping each pixel, half the time,
    with a neighbour up to GLASS[1] px up/left; twice; then blur again (as frosted glass)."""
    sigma, delta, passes = GLASS
    out = np.floor(_blur(x, sigma) * PIXEL_MAX) / PIXEL_MAX  # MNIST-C keeps it as uint8 here
    height, width = x.shape[1:]
    spots = [
        (h, w) for h in range(height - delta, delta, -1) for w in range(width - delta, delta, -1)
    ]
    swap = draws.integers(0, 2, passes * len(spots)).astype(bool)
    offsets = draws.integers(-delta, delta, passes * len(spots), 2)
    for step, (h, w) in enumerate(spots * passes):
        chosen = np.flatnonzero(swap[:, step])
        h2, w2 = h + offsets[chosen, step, 0], w + offsets[chosen, step, 1]
        here = out[chosen, h, w]
        out[chosen, h, w] = out[chosen, h2, w2]
        out[chosen, h2, w2] = here
    return np.clip(_blur(out, sigma), 0, 1)


def motion_blur(x: np.ndarray, draws: _Draws) -> np.ndarray:
    """A streak: each pixel the Gaussian-weighted mean of the pixels behind it along a random
    direction (ImageMagick's one-sided motion blur, taps to 2·radius px, rounded)."""
    radius, sigma, largest = MOTION
    angle = np.deg2rad(draws.uniform(low=-largest, high=largest))
    taps = np.arange(2 * radius + 1)
    weights = np.exp(-(taps**2) / (2 * sigma**2)).astype(np.float32)
    height, width = x.shape[1:]
    pad = taps[-1]
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    out = np.zeros_like(x)
    for tap, weight in zip(taps, weights, strict=True):
        moves = np.rint(tap * np.stack([np.sin(angle), np.cos(angle)], axis=1)).astype(np.intp)
        # the images whose streak takes this tap to the same pixel, moved together
        unique, which = np.unique(moves, axis=0, return_inverse=True)
        for group, (dy, dx) in enumerate(unique):
            rows = np.flatnonzero(which.ravel() == group)
            window = padded[rows, pad + dy : pad + dy + height, pad + dx : pad + dx + width]
            out[rows] += weight * window
    return np.clip(out / weights.sum(), 0, 1)


def shear(x: np.ndarray, draws: _Draws) -> np.ndarray:
    """Sheared about the centre by ±SHEAR (scikit-image's AffineTransform(shear=...))."""
    s = SHEAR * draws.signs()
    matrices = np.zeros((len(x), 2, 2))
    matrices[:, 0, 0], matrices[:, 0, 1], matrices[:, 1, 1] = 1, -np.sin(s), np.cos(s)
    return _warp(x, matrices)


def scale(x: np.ndarray, draws: _Draws) -> np.ndarray:
    """Shrunk about the centre to SHRINK of its size."""
    return _warp(x, np.broadcast_to(np.eye(2) / SHRINK, (len(x), 2, 2)))


def rotate(x: np.ndarray, draws: _Draws) -> np.ndarray:
    """Rotated about the centre by ±ROTATION radians."""
    r = ROTATION * draws.signs()
    matrices = np.stack([np.cos(r), -np.sin(r), np.sin(r), np.cos(r)], axis=1).reshape(-1, 2, 2)
    return _warp(x, matrices)


def translate(x: np.ndarray, draws: _Draws) -> np.ndarray:
    """Moved SHIFT px left or right and SHIFT px up or down."""
    return _warp(x, np.broadcast_to(np.eye(2), (len(x), 2, 2)), SHIFT * draws.signs(2))


def brightness(x: np.ndarray, draws: _Draws) -> np.ndarray:
    """Every pixel brighter by BRIGHTEN (HSV value + 0.5, which for grey is the pixel)."""
    return np.minimum(x + BRIGHTEN, 1)


def stripe(x: np.ndarray, draws: _Draws) -> np.ndarray:
    """The left and right quarters inverted (columns 0–6 and 21–27 of 28)."""
    out = x.copy()
    quarter = x.shape[2] // 4
    out[:, :, :quarter] = 1 - out[:, :, :quarter]
    out[:, :, -quarter:] = 1 - out[:, :, -quarter:]
    return out


def plasma_fractals(count: int, size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """`count` size×size plasma fractals (diamond-square, wrapping at the edges), 0–1.

    Each halving of the step draws offsets `decay²` times smaller, as MNIST-C's generator
    does (it scales its uniform offsets by the step's amplitude twice)."""
    maps = np.zeros((count, size, size))
    step, amplitude = size, 1.0
    while step >= 2:
        half = step // 2
        corners = maps[:, ::step, ::step]
        square = corners + np.roll(corners, -1, axis=1)
        square = square + np.roll(square, -1, axis=2)
        noise = rng.uniform(-1, 1, (3, *corners.shape)) * amplitude
        maps[:, half::step, half::step] = square / 4 + noise[0]
        centres = maps[:, half::step, half::step]
        across = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        maps[:, ::step, half::step] = across / 4 + noise[1]
        down = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        maps[:, half::step, ::step] = down / 4 + noise[2]
        step, amplitude = half, amplitude / decay**2
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def fog(x: np.ndarray, draws: _Draws) -> np.ndarray:
    """A cloud of plasma fractal laid over the digit at FOG[0]× its contrast, then scaled
    back into 0–1. Each digit's fog is a crop of one of FOG[3] large maps, at a random place
    (MNIST-C draws one whole map per digit and takes its corner: the same texture)."""
    strength, decay, size, pool = FOG
    maps = plasma_fractals(pool, size, decay, draws.generator())
    height, width = x.shape[1:]
    which = draws.integers(0, pool)
    top, left = draws.integers(0, size - height + 1), draws.integers(0, size - width + 1)
    rows = top[:, None, None] + np.arange(height)[None, :, None]
    cols = left[:, None, None] + np.arange(width)[None, None, :]
    cloud = maps[which[:, None, None], rows, cols]
    peak = x.max(axis=(1, 2), keepdims=True)
    return np.clip((x + strength * cloud) * peak / (peak + strength), 0, 1)


def spatter(x: np.ndarray, draws: _Draws) -> np.ndarray:
    """Mud: blurred noise, thresholded into blobs, the blobs' cores shaded grey over the digit."""
    mean, sd, sigma, cut, blob_sigma, shade = SPATTER
    liquid = _blur(
        mean + sd * draws.table(lambda rng, size: rng.standard_normal(size), *x.shape[1:]), sigma
    )
    mask = _blur((liquid > cut).astype(np.float64), blob_sigma)
    mask[mask < 0.8] = 0
    return np.clip(x * (1 - mask) + shade * mask, 0, 1)


def _drawn_once(params: np.ndarray, draw: Callable, shape: tuple[int, int]) -> np.ndarray:
    """The ink `draw(params, shape)` gives each image, drawn once per distinct row of
    `params`: a line has a few hundred possible places, a batch thousands of digits."""
    unique, inverse = np.unique(params, axis=0, return_inverse=True)
    return draw(unique, shape)[inverse.ravel()]


def _dotted_ink(ends: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    width, n = shape[1], len(ends)
    start = np.stack([np.zeros(n), ends[:, 0]], axis=1)
    end = np.stack([np.full(n, width - 1.0), ends[:, 1]], axis=1)
    ink = _line_ink(_segment_distance(shape, start, end))
    ink[:, :, (np.arange(width) // 2) % 2 == 0] = 0  # off, on, off, ... in 2-px blocks
    return ink


def dotted_line(x: np.ndarray, draws: _Draws) -> np.ndarray:
    """A dashed line from the left edge to the right at random heights, dashes 2 px long."""
    ends = draws.integers(0, x.shape[1] - 1, 2)
    return np.clip(x + _drawn_once(ends, _dotted_ink, x.shape[1:]), 0, 1)


def _zigzag_ink(params: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    half_period, amplitude, _ = ZIGZAG
    c0, c1 = 2.0, shape[1] - 3.0
    r0, theta = params[:, 0].astype(np.float64), np.arctan(params[:, 1] / (c1 - c0))
    teeth = int(((c1 - c0) - half_period) // (2 * half_period)) + 1
    # along the line: the start, a tooth every 2 half-periods (alternating sides), the end
    along = np.append(np.concatenate([[0.0], (2 * np.arange(teeth) + 1) * half_period]), 0)
    across = np.append(np.concatenate([[0.0], amplitude * (-1.0) ** np.arange(teeth)]), 0)
    along = np.broadcast_to(along, (len(params), teeth + 2)).copy()
    along[:, -1] = (c1 - c0) / np.cos(theta)
    cos, sin = np.cos(theta)[:, None], np.sin(theta)[:, None]
    points = np.stack(
        [c0 + along * cos - across * sin, r0[:, None] + along * sin + across * cos], 2
    )
    ink = np.zeros((len(params), *shape))
    for k in range(points.shape[1] - 1):
        distance = _segment_distance(shape, points[:, k], points[:, k + 1])
        ink = np.maximum(ink, _line_ink(distance))
    return ink


def zigzag(x: np.ndarray, draws: _Draws) -> np.ndarray:
    """A zigzag across the digit: from column 2 to column W−3, along a line through a random
    row rising or falling by up to ZIGZAG[2] px, its teeth ZIGZAG[1] px either side."""
    rise = ZIGZAG[2]
    params = np.stack([draws.integers(0, x.shape[1] - 1), draws.integers(-rise, rise)], axis=1)
    return np.clip(x + _drawn_once(params, _zigzag_ink, x.shape[1:]), 0, 1)


def canny_edges(x: np.ndarray, draws: _Draws) -> np.ndarray:
    """The digit's edges only, white on black: Canny's detector (smoothing, Sobel gradients,
    thinning to the ridge, hysteresis between two thresholds), as scikit-image's defaults."""
    from scipy import ndimage

    sigma, low, high = CANNY
    edge_light = _blur(np.ones_like(x[:1]), sigma, "constant")  # < 1 near the border
    smooth = _blur(x, sigma, "constant") / edge_light  # so the border doesn't read as an edge
    gy, gx = _sobel(smooth, 1), _sobel(smooth, 2)
    magnitude = np.hypot(gx, gy)
    padded = np.pad(magnitude, ((0, 0), (1, 1), (1, 1)))
    height, width = x.shape[1:]

    def neighbour(dy: int, dx: int) -> np.ndarray:
        return padded[:, 1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]

    # the gradient's direction, in four sectors: along x, the two diagonals, along y
    sector = np.rint(np.arctan2(gy, gx) / (np.pi / 4)).astype(np.intp) % 4
    ridge = np.zeros(x.shape, bool)
    for k, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        peak = (magnitude >= neighbour(dy, dx)) & (magnitude >= neighbour(-dy, -dx))
        ridge |= (sector == k) & peak
    ridge[:, [0, -1], :] = ridge[:, :, [0, -1]] = False  # scikit-image drops the border
    weak, strong = ridge & (magnitude >= low), ridge & (magnitude >= high)
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True  # 8-connected within an image, never across images
    labels, count = ndimage.label(weak, structure)
    keep = np.zeros(count + 1, bool)
    keep[labels[strong]] = True
    keep[0] = False
    return keep[labels].astype(np.float32)


FUNCTIONS: dict[str, Callable[[np.ndarray, _Draws], np.ndarray]] = {
    name: globals()[name] for name in CORRUPTIONS
}


# --------------------------------------------------------------------------------- the API
def check_names(names: Iterable[str]) -> tuple[str, ...]:
    """The corruptions `names` name, in MNIST-C's order: a name's case, and `-` or a space
    for `_`, aside (`Shot-Noise` is shot_noise).

    Raises:
        DataError: a name is not one of the 15, with the closest one.
    """
    chosen = set()
    for name in names:
        key = str(name).strip().casefold().replace("-", "_").replace(" ", "_")
        if key not in FUNCTIONS:
            raise DataError(
                f"unknown corruption '{printable(name)}'{did_you_mean(key, CORRUPTIONS)}; "
                f"MNIST-C's are {', '.join(CORRUPTIONS)}"
            )
        chosen.add(key)
    return tuple(name for name in CORRUPTIONS if name in chosen)


def corrupt(
    images: np.ndarray, name: str, *, seed: int = 0, index: np.ndarray | None = None
) -> np.ndarray:
    """Apply one MNIST-C corruption to a batch of digits.

    Args:
        images: uint8, N×H×W, white on black (MNIST's 0–255).
        name: one of `CORRUPTIONS` (see `check_names` for the spellings taken).
        seed: the draws' seed; default 0. The same seed, image and index give the same result.
        index: each image's number (e.g. its place in the test split), which keys its draws;
            default 0…N−1.

    Returns:
        The corrupted digits: uint8, N×H×W.

    Raises:
        DataError: the name is unknown, or the images are not a uint8 N×H×W batch.
    """
    (name,) = check_names([name])
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            f"corruptions take uint8 digits shaped N×H×W; got {images.dtype} {images.shape}"
        )
    index = np.arange(len(images)) if index is None else np.asarray(index, dtype=np.intp)
    if index.shape != (len(images),) or (len(index) and index.min() < 0):
        raise DataError(f"index must be one non-negative number per image; got {index.shape}")
    x = images.astype(np.float32) / np.float32(PIXEL_MAX)
    out = FUNCTIONS[name](x, _Draws(seed, name, index))
    return np.rint(np.clip(out, 0, 1) * PIXEL_MAX).astype(np.uint8)
