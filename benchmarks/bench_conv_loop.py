"""Convolutions inside a compiled training loop on XLA's CPU backend (issue 14).

A small convnet's SGD step (5×5 conv 32 → avg-pool → 5×5 conv 64 → avg-pool → dense 10,
batch 128, plain JAX) run K times in five structures:
- `per_step`: one jitted step, called K times from Python (what `model.fit` does);
- `fori`: the K steps in one program, in a `lax.fori_loop` (an XLA while loop);
- `scan`: the same with `lax.scan`;
- `unrolled`: the K steps written out one after another in one program;
and each with the NHWC layout (`conv_general_dilated`'s default for Keras), NCHW, and
im2col (the convolution as a matrix product of image patches). Then single layers, forward
and backward at batch 256, to pick cheap shapes for the `fast` preset.

    .venv/bin/python benchmarks/bench_conv_loop.py            # ~3 min on 2 cores
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

BATCH, STEPS = 128, 20


def convolve(x, w, layout: str, stride: int = 1, padding: str = "VALID"):
    if layout == "im2col":  # NHWC patches × (kh·kw·c_in) × c_out weights
        n, h, _, _ = x.shape
        k = w.shape[0]
        out = h - k + 1
        patches = jnp.stack(
            [x[:, i : i + out, j : j + out, :] for i in range(k) for j in range(k)], axis=3
        )
        return patches.reshape(n, out, out, -1) @ w.reshape(-1, w.shape[-1])
    numbers = ("NCHW", "HWIO", "NCHW") if layout == "NCHW" else ("NHWC", "HWIO", "NHWC")
    return lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=numbers)


def pool(h, layout: str):
    if layout == "NCHW":
        n, c, s, _ = h.shape
        return h.reshape(n, c, s // 2, 2, s // 2, 2).mean((3, 5))
    n, s, _, c = h.shape
    return h.reshape(n, s // 2, 2, s // 2, 2, c).mean((2, 4))


def network(layout: str):
    def forward(params, x):
        if layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        h = pool(jax.nn.relu(convolve(x, params["w1"], layout)), layout)
        h = pool(jax.nn.relu(convolve(h, params["w2"], layout)), layout)
        return h.reshape(h.shape[0], -1) @ params["w3"]

    def loss(params, x, y):
        logits = jax.nn.log_softmax(forward(params, x))
        return -jnp.mean(jnp.take_along_axis(logits, y[:, None], 1))

    def step(params, x, y):
        grads = jax.grad(loss)(params, x, y)
        return jax.tree.map(lambda p, g: p - 0.01 * g, params, grads)

    return step


def structures(step, x, y, steps: int):
    def batch(i):
        return lax.dynamic_slice_in_dim(x, i * BATCH, BATCH), lax.dynamic_slice_in_dim(
            y, i * BATCH, BATCH
        )

    jitted = jax.jit(step)

    def per_step(params):
        for i in range(steps):
            params = jitted(params, x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])
        return params

    @jax.jit
    def fori(params):
        return lax.fori_loop(0, steps, lambda i, p: step(p, *batch(i)), params)

    @jax.jit
    def scan(params):
        return lax.scan(lambda p, i: (step(p, *batch(i)), None), params, jnp.arange(steps))[0]

    @jax.jit
    def unrolled(params):
        for i in range(steps):
            params = step(params, x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])
        return params

    return {"per_step": per_step, "fori": fori, "scan": scan, "unrolled": unrolled}


def time_it(function, params, repeats: int = 3) -> tuple[float, float]:
    """(first call in s, including the compile; best of `repeats` later calls in s)."""
    started = time.perf_counter()
    jax.block_until_ready(function(params))
    first = time.perf_counter() - started
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(function(params))
        best = min(best, time.perf_counter() - started)
    return first, best


def loops() -> None:
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    params = {
        "w1": jax.random.normal(keys[0], (5, 5, 1, 32)) * 0.1,
        "w2": jax.random.normal(keys[1], (5, 5, 32, 64)) * 0.05,
        "w3": jax.random.normal(keys[2], (4 * 4 * 64, 10)) * 0.01,
    }
    rng = np.random.default_rng(0)
    print("| layout | structure | steps per program | ms per step | first call (compile) s |")
    print("|---|---|---|---|---|")
    cases = [("NHWC", s, STEPS) for s in ("per_step", "fori", "scan", "unrolled")]
    cases += [("NHWC", "unrolled", k) for k in (4, 8, 40)]
    cases += [("NCHW", s, STEPS) for s in ("per_step", "fori", "unrolled")]
    cases += [("im2col", s, STEPS) for s in ("per_step", "fori", "unrolled")]
    for layout, structure, steps in cases:
        x = jnp.asarray(rng.random((steps * BATCH, 28, 28, 1), dtype=np.float32))
        y = jnp.asarray(rng.integers(0, 10, steps * BATCH))
        function = structures(network(layout), x, y, steps)[structure]
        first, best = time_it(function, params, repeats=1 if structure in ("fori", "scan") else 3)
        print(f"| {layout} | {structure} | {steps} | {best / steps * 1000:.1f} | {first:.2f} |",
              flush=True)  # fmt: skip


def layers() -> None:
    batch = 256

    def conv(image: tuple[int, int, int], kernel: tuple[int, int, int, int]):
        return (lambda x, w: convolve(x, w, "NHWC"), image, kernel)

    cases = {
        "conv 3×3 1→32, 28×28 → 26×26": conv((28, 28, 1), (3, 3, 1, 32)),
        "conv 5×5 1→32, 28×28 → 24×24": conv((28, 28, 1), (5, 5, 1, 32)),
        "conv 5×5 1→16, 28×28 → 24×24": conv((28, 28, 1), (5, 5, 1, 16)),
        "conv 3×3 32→64, 13×13 → 11×11 (keras-io)": conv((13, 13, 32), (3, 3, 32, 64)),
        "conv 3×3 32→64, 12×12 → 10×10": conv((12, 12, 32), (3, 3, 32, 64)),
        "conv 5×5 32→64, 12×12 → 8×8 (cnn)": conv((12, 12, 32), (5, 5, 32, 64)),
        "conv 5×5 16→32, 12×12 → 8×8 (fast)": conv((12, 12, 16), (5, 5, 16, 32)),
        "max pool 2, 26×26×32 (reduce_window)": (
            lambda x: lax.reduce_window(x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"),
            (26, 26, 32),
        ),
        "average pool 2, 26×26×32 (reshape + mean)": (
            lambda x: x.reshape(batch, 13, 2, 13, 2, 32).mean((2, 4)),
            (26, 26, 32),
        ),
    }
    print(f"\n| layer, forward + backward, batch {batch} | ms | s per 60,000 |")
    print("|---|---|---|")
    rng = np.random.default_rng(0)
    for name, (function, *shapes) in cases.items():
        arrays = [jnp.asarray(rng.random((batch, *shapes[0]), dtype=np.float32))]
        arrays += [jnp.asarray(rng.random(s, dtype=np.float32)) for s in shapes[1:]]
        argnums = tuple(range(len(arrays)))
        gradient = jax.jit(jax.grad(lambda *a, f=function: jnp.sum(f(*a) ** 2), argnums=argnums))
        _, best = time_it(lambda _, g=gradient, a=arrays: g(*a), None, repeats=10)
        print(f"| {name} | {best * 1000:.1f} | {best * 60_000 / batch:.1f} |", flush=True)


if __name__ == "__main__":
    print(f"JAX {jax.__version__}, {jax.devices()[0].platform}, batch {BATCH}")
    loops()
    layers()
