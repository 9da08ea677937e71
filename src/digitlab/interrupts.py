"""Ctrl-C and SIGTERM as a request to stop at the next safe point, not wherever Python is; and
a child process that dies with its parent.

A `KeyboardInterrupt` raised at an arbitrary bytecode can land in a finalizer or a JAX
callback, where Python swallows it, or half-way through writing state. Here the first Ctrl-C
(or SIGTERM) only sets `requested` (and the event `stop_on_signals` yields); training checks it
between compiled chunks of steps (`fastfit.StopOnRequest`), an experiment between runs and the
tuner between batches and trials. A second Ctrl-C interrupts at once, for a program that is
stuck.

This module imports neither Keras nor anything of digitlab's, so any module may use it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

requested = threading.Event()  # set by the first Ctrl-C or SIGTERM inside `stop_on_signals`
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>: the signal a process gets when its parent dies


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """While inside: Ctrl-C and SIGTERM set `requested` (cleared on entry) and the yielded event.

    The event is this block's own: nothing else clears it, so a caller that runs several fits
    in a row (each of which clears `requested` when it starts, inside a block of its own) still
    sees a signal that came between two of them. Outside the main thread signals can't be
    handled, and are left alone (the event is yielded all the same, never set).
    """
    stop = threading.Event()

    def ask(signum, frame):
        stop.set()
        requested.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C: at once

    requested.clear()
    try:
        previous = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield stop
        return
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def die_with_parent(
    parent: int, signum: int, orphaned: Callable[[], object]
) -> Callable[[], None] | None:
    """A function that, run in a child of process `parent`, has Linux send the child `signum`
    when `parent` dies (prctl PR_SET_PDEATHSIG), and calls `orphaned()` if `parent` is gone
    already (it died before prctl: no signal will come). None where prctl isn't available.

    It covers what no `finally` can: the parent being SIGKILLed (or OOM-killed). The libc
    lookup happens here, so the function makes one system call: it is safe as a subprocess's
    `preexec_fn`, between the fork and the exec.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    unused = ctypes.c_ulong(0)
    args = (ctypes.c_int(PR_SET_PDEATHSIG), ctypes.c_ulong(signum), unused, unused, unused)

    def arm() -> None:
        prctl(*args)
        if os.getppid() != parent:
            orphaned()

    return arm
