"""The drawing page: `/` and its files under `/static` (kept out of the OpenAPI schema)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent.parent / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html")


def static_files() -> StaticFiles:
    """The page's script and style sheet, for `app.mount("/static", ...)`: a router can't
    carry a mount into the app."""
    return StaticFiles(directory=STATIC_DIR)
