"""On-the-fly changes of training digits, two layers: `RandomDistortion` (random affine maps
and elastic warps) and `RandomDegradation` (noise, blur, stroke width, marks, gaps, low
resolution: issue 22's digits that leave MNIST).

`RandomDistortion` is a Keras layer placed first in a spec, as Keras's own `RandomRotation`
or `RandomZoom` would be; `RandomDegradation` after it. Both change the digits only while
training (`training=True`), so evaluation, prediction and serving see the digits as they
are, and a saved model loads with them in place. Everything is `keras.ops`, vectorised over
the batch: a compiled training step (fastfit's loop, or `fit`'s) runs them on the CPU
without a data pipeline.

The distortions are those of Simard, Steinkraus & Platt 2003, "Best practices for
convolutional neural networks applied to visual document analysis": a random affine map
(rotation, scale, shear, shift) composed with an elastic field, i.e. uniform random
displacements smoothed by a Gaussian of width `elastic_sigma` and scaled by
`elastic_alpha` pixels; pixels are resampled bilinearly, and what comes from outside the
image is background (0).

Why not Keras's `RandomElasticTransform` (Keras 3.15, JAX backend): it draws its x and y
displacements from the same seed (so every pixel moves along the diagonal), resamples each
image of the batch in its own unrolled call, and ties the field's smoothness to its size.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from digitlab.choices import DEGRADATIONS


@keras.saving.register_keras_serializable(package="digitlab")
class RandomDistortion(keras.layers.Layer):
    """Randomly rotate, scale, shear, shift and elastically warp images (N×H×W×C), in training.

    Args:
        rotation: largest rotation, degrees either way.
        scale: largest relative zoom either way (0.1: from 90% to 110%).
        shear: largest shear angle, degrees either way.
        shift: largest shift, pixels either way, drawn for x and y separately.
        elastic_alpha: strength of the elastic field, pixels; 0 turns it off.
        elastic_sigma: smoothness of the elastic field, pixels (Gaussian standard deviation).
        seed: seed of the layer's random generator (None: Keras's global seed).
    """

    def __init__(
        self,
        rotation: float = 0.0,
        scale: float = 0.0,
        shear: float = 0.0,
        shift: float = 0.0,
        elastic_alpha: float = 0.0,
        elastic_sigma: float = 4.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        limits = {"rotation": (rotation, 90), "scale": (scale, 0.9), "shear": (shear, 60),
                  "shift": (shift, 14), "elastic_alpha": (elastic_alpha, 100)}  # fmt: skip
        for name, (value, most) in limits.items():
            if not 0 <= value <= most:
                raise ValueError(f"{name} must be between 0 and {most}, got {value}")
        if not elastic_sigma > 0:
            raise ValueError(f"elastic_sigma must be positive, got {elastic_sigma}")
        self.rotation, self.scale, self.shear, self.shift = rotation, scale, shear, shift
        self.elastic_alpha, self.elastic_sigma = elastic_alpha, elastic_sigma
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"RandomDistortion needs images (N×H×W×C), got shape {tuple(input_shape)}; "
                'use input = "image"'
            )
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, images, training=None):
        if not training:
            return images
        batch, height, width, channels = ops.shape(images)
        rows, cols = self._source_coordinates(batch, height, width)
        # One gather for the whole batch: the image index is a coordinate too, always a
        # whole number, so bilinear interpolation never mixes two images.
        index = ops.broadcast_to(ops.reshape(ops.arange(batch, dtype=rows.dtype), (-1, 1, 1)),
                                 ops.shape(rows))  # fmt: skip
        planes = [
            ops.image.map_coordinates(
                images[..., c], ops.stack([index, rows, cols]), order=1, fill_mode="constant"
            )
            for c in range(channels)
        ]
        return ops.cast(ops.stack(planes, axis=-1), images.dtype)

    def _uniform(self, shape, limit):
        return keras.random.uniform(shape, -limit, limit, seed=self.seed_generator)

    def _source_coordinates(self, batch, height, width):
        """For every output pixel, where in the input image it is read from (N×H×W each)."""
        center_row, center_col = (height - 1) / 2, (width - 1) / 2
        row = ops.reshape(ops.arange(height, dtype="float32"), (1, -1, 1)) - center_row
        col = ops.reshape(ops.arange(width, dtype="float32"), (1, 1, -1)) - center_col
        # The affine part: x' = M x + t about the image centre, per image.
        angle = self._uniform((batch,), math.radians(self.rotation))
        shear = self._uniform((batch,), math.radians(self.shear))
        zoom = 1 + self._uniform((batch,), self.scale)
        cos, sin, tan = ops.cos(angle) / zoom, ops.sin(angle) / zoom, ops.tan(shear)
        m00, m01 = cos, cos * tan - sin
        m10, m11 = sin, sin * tan + cos
        shift_row = self._uniform((batch,), self.shift)
        shift_col = self._uniform((batch,), self.shift)

        def per_image(v):
            return ops.reshape(v, (-1, 1, 1))

        src_col = per_image(m00) * col + per_image(m01) * row + per_image(shift_col)
        src_row = per_image(m10) * col + per_image(m11) * row + per_image(shift_row)
        if self.elastic_alpha > 0:
            src_row = src_row + self._elastic_field(batch, height, width)
            src_col = src_col + self._elastic_field(batch, height, width)
        return src_row + center_row, src_col + center_col

    def _elastic_field(self, batch, height, width):
        """Uniform noise in [-1, 1] smoothed by a Gaussian (two matrix products), × alpha."""
        noise = self._uniform((batch, height, width), 1.0)
        blur_rows = _gaussian_matrix(height, self.elastic_sigma)
        blur_cols = _gaussian_matrix(width, self.elastic_sigma)
        return self.elastic_alpha * ops.matmul(ops.matmul(blur_rows, noise), blur_cols)

    def get_config(self):
        return {
            **super().get_config(),
            "rotation": self.rotation,
            "scale": self.scale,
            "shear": self.shear,
            "shift": self.shift,
            "elastic_alpha": self.elastic_alpha,
            "elastic_sigma": self.elastic_sigma,
            "seed": self.seed,
        }


def _gaussian_matrix(size: int, sigma: float):
    """`size`×`size` matrix of a normalised 1-D Gaussian: G @ v convolves v, zero-padded."""
    pos = ops.arange(size, dtype="float32")
    distance = ops.expand_dims(pos, 0) - ops.expand_dims(pos, 1)
    return ops.exp(-0.5 * (distance / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


@keras.saving.register_keras_serializable(package="digitlab")
class RandomDegradation(keras.layers.Layer):
    """Degrade a random share of training images (N×H×W×C, 0–1) in one of several ways.

    Each image is degraded with probability `probability`, by one kind drawn uniformly from
    `kinds` (`DEGRADATIONS`), with a strength drawn per image:

    - noise: Gaussian noise of standard deviation 0.1–0.5;
    - specks: 2–20% of pixels set to black or white at random (salt and pepper);
    - blur: a Gaussian blur of width 0.5–2 pixels, its brightest pixel stretched back to 1;
    - thicken, thin: strokes one pixel wider (a 3×3 dilation) or narrower (a 2×2 erosion);
    - outline: only the strokes' outer edge (dilation minus the digit), as a hollow pen draws;
    - strokes: one to three straight marks of width about 1.5 pixels across the frame;
    - gap: a rectangle of 4–10 pixels a side wiped to the background;
    - coarse: half the resolution (2×2 means), scaled back bilinearly.

    Like `RandomDistortion` it acts only in training; at inference it is the identity.

    Args:
        probability: share of images degraded, 0–1.
        kinds: the degradations to draw from, or one by name (default: all of
            `DEGRADATIONS`).
        seed: seed of the layer's random generator (None: Keras's global seed).
    """

    def __init__(
        self,
        probability: float = 0.5,
        kinds: tuple[str, ...] | list[str] | str | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0 <= probability <= 1:
            raise ValueError(f"probability must be between 0 and 1, got {probability}")
        kinds = (
            (kinds,) if isinstance(kinds, str) else tuple(DEGRADATIONS if kinds is None else kinds)
        )
        unknown_kinds = [kind for kind in kinds if kind not in DEGRADATIONS]
        if unknown_kinds or not kinds:
            raise ValueError(
                f"kinds must be some of {', '.join(DEGRADATIONS)}; got {list(kinds) or 'none'}"
            )
        self.probability, self.kinds, self.seed = probability, kinds, seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                f"RandomDegradation needs images (N×H×W×C), got shape {tuple(input_shape)}; "
                'use input = "image"'
            )
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, images, training=None):
        if not training or self.probability == 0:
            return images
        batch = ops.shape(images)[0]
        degraded = [getattr(self, f"_{kind}")(images) for kind in self.kinds]
        which = keras.random.randint((batch,), 0, len(self.kinds), seed=self.seed_generator)
        chosen = images * 0
        for index, image in enumerate(degraded):
            chosen = chosen + _per_image(ops.cast(which == index, images.dtype)) * image
        on = self._uniform(batch, 0, 1) < self.probability
        out = ops.where(_per_image(on), ops.clip(chosen, 0, 1), images)
        return ops.cast(out, images.dtype)

    def _uniform(self, shape, low, high):
        return keras.random.uniform(
            shape if isinstance(shape, tuple) else (shape,), low, high, seed=self.seed_generator
        )

    def _noise(self, x):
        sigma = _per_image(self._uniform(ops.shape(x)[0], 0.1, 0.5))
        return x + sigma * keras.random.normal(ops.shape(x), seed=self.seed_generator)

    def _specks(self, x):
        share = _per_image(self._uniform(ops.shape(x)[0], 0.02, 0.2))
        hit = self._uniform(tuple(ops.shape(x)), 0, 1) < share
        white = ops.cast(self._uniform(tuple(ops.shape(x)), 0, 1) < 0.5, x.dtype)
        return ops.where(hit, white, x)

    def _blur(self, x):
        batch, height, width, _ = ops.shape(x)
        sigma = self._uniform(batch, 0.5, 2.0)
        rows, cols = _gaussian_matrices(height, sigma), _gaussian_matrices(width, sigma)
        planes = ops.transpose(x, (0, 3, 1, 2))  # N×C×H×W: blur each plane
        blurred = ops.matmul(
            ops.matmul(rows[:, None], planes), ops.transpose(cols, (0, 2, 1))[:, None]
        )
        blurred = ops.transpose(blurred, (0, 2, 3, 1))
        brightest = ops.max(blurred, axis=(1, 2, 3), keepdims=True)
        return blurred / ops.maximum(brightest, 1e-3)

    def _thicken(self, x):
        return ops.max_pool(x, 3, strides=1, padding="same")

    def _thin(self, x):
        return -ops.max_pool(-x, 2, strides=1, padding="same")

    def _outline(self, x):
        return self._thicken(x) - x

    def _strokes(self, x):
        batch, height, width, _ = ops.shape(x)
        marks = 3
        ends = self._uniform((batch, marks, 4), 0, 1) * ops.convert_to_tensor(
            [height - 1, width - 1, height - 1, width - 1], dtype="float32"
        )
        row = ops.reshape(ops.arange(height, dtype="float32"), (1, 1, -1, 1))
        col = ops.reshape(ops.arange(width, dtype="float32"), (1, 1, 1, -1))
        r0, c0, r1, c1 = (ops.reshape(ends[..., i], (batch, marks, 1, 1)) for i in range(4))
        dr, dc = r1 - r0, c1 - c0
        along = ((row - r0) * dr + (col - c0) * dc) / ops.maximum(dr * dr + dc * dc, 1e-6)
        along = ops.clip(along, 0, 1)
        distance = ops.sqrt((row - r0 - along * dr) ** 2 + (col - c0 - along * dc) ** 2)
        ink = ops.clip(1.5 - distance, 0, 1)  # about 1.5 pixels wide, anti-aliased
        count = keras.random.randint((batch, 1), 1, marks + 1, seed=self.seed_generator)
        kept = ops.cast(ops.arange(marks)[None, :] < count, "float32")
        ink = ops.max(ink * ops.reshape(kept, (batch, marks, 1, 1)), axis=1)
        return ops.maximum(x, ops.cast(ink[..., None], x.dtype))

    def _gap(self, x):
        batch, height, width, _ = ops.shape(x)
        size = self._uniform((batch, 2), 4, 10)
        top = self._uniform(batch, 0, 1) * (height - size[:, 0])
        left = self._uniform(batch, 0, 1) * (width - size[:, 1])
        row = ops.reshape(ops.arange(height, dtype="float32"), (1, -1, 1))
        col = ops.reshape(ops.arange(width, dtype="float32"), (1, 1, -1))
        inside = ((row >= _per_plane(top)) & (row < _per_plane(top + size[:, 0]))
                  & (col >= _per_plane(left)) & (col < _per_plane(left + size[:, 1])))  # fmt: skip
        return ops.where(inside[..., None], ops.zeros_like(x), x)

    def _coarse(self, x):
        height, width = ops.shape(x)[1], ops.shape(x)[2]
        small = ops.average_pool(x, 2, strides=2, padding="valid")
        return ops.image.resize(small, (height, width), interpolation="bilinear")

    def get_config(self):
        return {
            **super().get_config(),
            "probability": self.probability,
            "kinds": list(self.kinds),
            "seed": self.seed,
        }


def _per_image(v):
    return ops.reshape(v, (-1, 1, 1, 1))


def _per_plane(v):
    return ops.reshape(v, (-1, 1, 1))


def _gaussian_matrices(size: int, sigma):
    """One `_gaussian_matrix` per width in `sigma` (N), N×size×size, each row summing to 1."""
    pos = ops.arange(size, dtype="float32")
    distance = ops.expand_dims(pos, 0) - ops.expand_dims(pos, 1)
    weights = ops.exp(-0.5 * (distance[None] / ops.reshape(sigma, (-1, 1, 1))) ** 2)
    return weights / ops.sum(weights, axis=-1, keepdims=True)
