"""How runs, evaluations and predictions show themselves: one `repr()` line, and in Jupyter an
inline card (`_repr_html_`) with the key figures and pictures inlined as PNG data URIs.

The card is rendered with the report package's Jinja2 environment (autoescaped) and its
`data_uri`/`number`/`percent` helpers, so it reads like a run's report.html and needs no
network. Nothing here imports Keras; pictures a run folder lacks are drawn into a temporary
folder, never into the run.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from digitlab.html import data_uri, number, percent, render


def card(
    title: str,
    rows: Sequence[tuple[str, Any]],
    figures: Sequence[dict[str, str]] = (),
    subtitle: str = "",
) -> str:
    """The inline HTML: a title, a table of (name, value) rows and inlined figures."""
    return render(
        "inline.html.j2",
        title=title,
        subtitle=subtitle,
        rows=[(name, "–" if value is None else value) for name, value in rows],
        figures=list(figures),
    )


def drawn_figure(draw: Callable[[Path], Any], title: str) -> dict[str, str]:
    """A figure drawn by `draw(path)` into a temporary PNG, inlined as a data URI."""
    with tempfile.TemporaryDirectory(prefix="digitlab-inline-") as folder:
        path = Path(folder) / "figure.png"
        draw(path)
        return {"title": title, "src": data_uri(path)}


def file_figure(path: Path, title: str) -> dict[str, str] | None:
    """A PNG from a run folder, inlined; None if the folder doesn't hold it."""
    return {"title": title, "src": data_uri(path)} if path.is_file() else None


def accuracy_text(value: float | None) -> str:
    """A test accuracy for a one-line repr: "97.81%", or "–" when there is none."""
    return percent(value) if value is not None else "–"


__all__ = ["accuracy_text", "card", "drawn_figure", "file_figure", "number", "percent"]
