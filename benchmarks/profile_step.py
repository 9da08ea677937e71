"""Where a training step of the notebook's network goes on this CPU: each piece of the step
compiled alone in a `lax.fori_loop` of 1,875 iterations (one epoch at batch 32), so every
figure is seconds per epoch, directly comparable with the issue's 0.35 s/epoch target.

Pieces: the first layer's forward product (32×784 @ 784×100) and its weight gradient
(784×32 @ 32×100), then the whole step hand-written in JAX: with SGD and no dropout, with
Adam, with Adam and dropout (the differences are what Adam's update and dropout cost).
NumPy's product of the same shapes is timed for comparison. Random data: only the shapes
matter.

    .venv/bin/python benchmarks/profile_step.py
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

BATCH, STEPS = 32, 60_000 // 32
SIZES = [(784, 100), (100, 100), (100, 100), (100, 10)]  # the notebook's Dense layers


def seconds_per_epoch(body, init, repeats: int = 5) -> float:
    loop = jax.jit(lambda state: jax.lax.fori_loop(0, STEPS, body, state))
    jax.block_until_ready(loop(init))  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(loop(init))
        times.append(time.perf_counter() - start)
    return min(times)


def network_step(dropout: bool, adam: bool, x, y, params):
    """A hand-written step of the notebook's network (sigmoid, 2×relu, sigmoid output)."""

    def loss(p, xb, yb, key):
        h = jax.nn.sigmoid(xb @ p[0] + p[1])
        h = jax.nn.relu(h @ p[2] + p[3])
        if dropout:
            h = jnp.where(
                jax.random.bernoulli(jax.random.fold_in(key, 1), 0.8, h.shape), h / 0.8, 0
            )
        h = jax.nn.relu(h @ p[4] + p[5])
        if dropout:
            h = jnp.where(
                jax.random.bernoulli(jax.random.fold_in(key, 2), 0.8, h.shape), h / 0.8, 0
            )
        out = jax.nn.sigmoid(h @ p[6] + p[7])
        out = out / jnp.sum(out, -1, keepdims=True)
        return -jnp.mean(jnp.log(jnp.take_along_axis(out, yb[:, None], 1)))

    def body(i, state):
        p, m, v = state
        xb = jax.lax.dynamic_slice(x, (i * BATCH, 0), (BATCH, 784))
        yb = jax.lax.dynamic_slice(y, (i * BATCH,), (BATCH,))
        g = jax.grad(loss)(p, xb, yb, jax.random.key(i))
        if not adam:
            return [a - 0.01 * b for a, b in zip(p, g, strict=True)], m, v
        m = [a + (b - a) * 0.1 for a, b in zip(m, g, strict=True)]
        v = [a + (b * b - a) * 0.001 for a, b in zip(v, g, strict=True)]
        p = [a - 1e-3 * b / (jnp.sqrt(c) + 1e-7) for a, b, c in zip(p, m, v, strict=True)]
        return p, m, v

    zeros = [jnp.zeros_like(p) for p in params]
    return body, (params, zeros, list(zeros))


def main() -> None:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((60_000, 784), dtype=np.float32))
    y = jnp.asarray(rng.integers(0, 10, 60_000, dtype=np.int32))
    w = jnp.asarray(rng.random((784, 100), dtype=np.float32) * 0.01)
    g = jnp.asarray(rng.random((BATCH, 100), dtype=np.float32))
    params = []
    for rows, cols in SIZES:
        params += [jnp.asarray(rng.normal(size=(rows, cols)).astype(np.float32) * 0.05),
                   jnp.zeros(cols)]  # fmt: skip

    def batch(i):
        return jax.lax.dynamic_slice(x, (i * BATCH, 0), (BATCH, 784))

    rows = {
        "first layer forward, 32×784 @ 784×100": seconds_per_epoch(
            lambda i, s: s + (batch(i) @ w)[0, 0], 0.0
        ),
        "first layer weight gradient, 784×32 @ 32×100": seconds_per_epoch(
            lambda i, s: s + batch(i).T @ g, jnp.zeros((784, 100))
        ),
        "both products and an SGD update of that layer": seconds_per_epoch(
            lambda i, s: s - 1e-6 * (batch(i).T @ (batch(i) @ s)), w
        ),
    }
    for dropout, adam in ((False, False), (False, True), (True, True)):
        label = f"whole step, hand-written: {'dropout' if dropout else 'no dropout'}, " + (
            "Adam" if adam else "SGD"
        )
        rows[label] = seconds_per_epoch(*network_step(dropout, adam, x, y, params))
    xb, wn = np.asarray(x[:BATCH]), np.asarray(w)
    start = time.perf_counter()
    for _ in range(STEPS):
        xb @ wn
    rows["NumPy (OpenBLAS): first layer forward, same shapes"] = time.perf_counter() - start

    print(f"jax {jax.__version__}, {STEPS} steps of batch {BATCH} (one epoch)")
    print("| piece | s/epoch | µs/step |\n|---|---|---|")
    for label, seconds in rows.items():
        print(f"| {label} | {seconds:.3f} | {seconds / STEPS * 1e6:.0f} |")


if __name__ == "__main__":
    main()
