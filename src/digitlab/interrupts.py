"""Ctrl-C and SIGTERM as a request to stop at the next safe point, not wherever Python is.

A `KeyboardInterrupt` raised at an arbitrary bytecode can land in a finalizer or a JAX
callback, where Python swallows it, or half-way through writing state. Here the first Ctrl-C
(or SIGTERM) only sets `requested`; training checks it between compiled chunks of steps
(`StopOnRequest`) and the tuner between batches and trials. A second Ctrl-C interrupts at
once, for a program that is stuck.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import keras

requested = threading.Event()  # set by the first Ctrl-C or SIGTERM inside `stop_on_signals`


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While inside: Ctrl-C and SIGTERM set `requested` (cleared on entry).

    Outside the main thread signals can't be handled, and are left alone.
    """

    def ask(signum, frame):
        requested.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once

    requested.clear()
    try:
        previous = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class StopOnRequest(keras.callbacks.Callback):
    """Raise KeyboardInterrupt after the batch (or compiled chunk) during which a stop came."""

    def on_train_batch_end(self, batch, logs=None):
        if requested.is_set():
            raise KeyboardInterrupt
