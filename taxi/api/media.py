"""Stored photos, served by the names the server gave them; nothing else under /media/ exists."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse

from taxi.api.context import TaxiRequest
from taxi.errors import NotFound

bp = Blueprint("media", url_prefix="/media")

# A photo's name is random and never reused, so what it names never changes: caches may keep it for a year.
PHOTO_CACHE_CONTROL = "public, max-age=31536000, immutable"


@bp.get("/photos/<name:str>")
async def photo(request: TaxiRequest, name: str) -> HTTPResponse:
    found = await request.app.ctx.media.read_photo(name)
    if found is None:
        raise NotFound("Not found.")
    body, content_type = found
    return HTTPResponse(body, content_type=content_type, headers={"Cache-Control": PHOTO_CACHE_CONTROL})
