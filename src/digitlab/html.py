"""What every HTML page shares (reports, comparisons, a run's notebook view): the Jinja2
environment over `digitlab/report/templates`, inlined images and number formats.

It sits below `runs` (a run shows itself in a notebook with it), so it loads the templates
from their folder rather than through the `digitlab.report` package, whose pages read runs.
"""

from __future__ import annotations

import base64
import math
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from digitlab._version import __version__
from digitlab.errors import RunError
from digitlab.files import read_capped

TEMPLATES_DIR = Path(__file__).parent / "report" / "templates"
MAX_IMAGE_BYTES = 20 << 20  # a PNG inlined into a page; ours are 20–300 kB

_env: Environment | None = None


def environment() -> Environment:
    """The templates in `digitlab/report/templates`, HTML-escaped (autoescape on), and strict:
    a value a template names but the code didn't pass is an error, not a blank."""
    global _env
    if _env is None:
        _env = Environment(
            loader=FileSystemLoader(TEMPLATES_DIR),
            autoescape=True,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        _env.filters["num"] = number
        _env.filters["percent"] = percent
        _env.filters["fixed"] = fixed
    return _env


def render(template: str, **context: Any) -> str:
    context.setdefault("written", f"{datetime.now():%Y-%m-%d %H:%M}")
    context.setdefault("version", __version__)
    return environment().get_template(template).render(**context)


def data_uri(path: Path) -> str:
    """A PNG file as a `data:image/png;base64,...` URI, so the page needs no other file.

    Raises:
        RunError: the file is not a regular file of at most 20 MB.
    """
    data = read_capped(path, MAX_IMAGE_BYTES, RunError)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure(path: Path, title: str, caption: str = "") -> dict[str, str]:
    return {"title": title, "caption": caption, "src": data_uri(path), "file": path.name}


def number(value: Any, digits: int = 4) -> str:
    """A number for a table: 4 significant digits, "–" for nothing; a whole number (an int,
    or a float such as a count read back as 10000.0) with thousands separators, never 1e+04."""
    if value is None or value == "":
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int) or (value.is_integer() and abs(value) < 1e15):
        return f"{int(value):,}"
    return f"{value:.{digits}g}"


def percent(value: Any, digits: int = 2) -> str:
    """A fraction 0–1 as a percentage, "–" for nothing."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "–"
    return f"{value:.{digits}%}"


def fixed(value: Any, decimals: int = 4) -> str:
    """A number with a fixed count of decimals (a loss: 0.0850 beside 0.0912), "–" for
    nothing."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "–"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{decimals}f}"


# Metrics that are shares of the digits, shown as percentages like the test accuracy.
FRACTION_METRICS = ("accuracy", "precision", "recall", "f1", "auc")


def metric(name: str, value: Any) -> str:
    """A training metric by its name (`val_accuracy`, `loss`, …): shares of the digits as
    percentages (`percent`), losses with 4 decimals (`fixed`), anything else as `number`."""
    base = name.removeprefix("val_").removeprefix("test_").lower()
    if base.endswith(FRACTION_METRICS) or base.endswith("f1_score"):
        return percent(value)
    if base.endswith("loss"):
        return fixed(value)
    return number(value)


def relative_href(target: Path, page_folder: Path) -> str:
    """A link from a page in `page_folder` to `target` that still works if both move together."""
    return Path(os.path.relpath(target.resolve(), page_folder.resolve())).as_posix()


def layer_text(layer: dict[str, Any]) -> str:
    """One layer in a few words: `Dense(units=100, activation=sigmoid)`."""
    args = ", ".join(f"{key}={value}" for key, value in layer.items() if key != "type")
    return f"{layer.get('type', '?')}({args})"


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys; lists of plain values joined by commas."""
    out: dict[str, Any] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            out |= flatten(value, f"{prefix}{key}." if prefix or key else "")
        return out
    name = prefix.rstrip(".")
    if isinstance(data, list | tuple):
        out[name] = ", ".join(
            layer_text(item) if isinstance(item, dict) else str(item) for item in data
        )
    else:
        out[name] = data
    return out
