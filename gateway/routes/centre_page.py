"""The member centre page (/centre): plain HTML + JS over the /v1/me endpoints, no build step.
The shop links to `/centre?shop_id=SHOP#token=TOKEN` (`&lang=en` for English; Chinese by
default); the token stays in the fragment, which the browser never sends to a server."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parents[1] / "static"
# The page runs only its own script and style and talks only to the gateway that served it.
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@router.get("/centre")
async def centre_page() -> FileResponse:
    return FileResponse(STATIC / "centre.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/centre/centre.js")
async def centre_script() -> FileResponse:
    return FileResponse(STATIC / "centre.js", media_type="text/javascript; charset=utf-8", headers=HEADERS)


@router.get("/centre/centre.css")
async def centre_style() -> FileResponse:
    return FileResponse(STATIC / "centre.css", media_type="text/css; charset=utf-8", headers=HEADERS)
