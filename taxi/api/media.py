"""Stored photos, served by the names the server gave them; nothing else under /media/ exists."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse
from sanic.response import file

from taxi.api.context import TaxiRequest
from taxi.errors import NotFound
from taxi.services.media import CONTENT_TYPES

bp = Blueprint("media", url_prefix="/media")


@bp.get("/photos/<name:str>")
async def photo(request: TaxiRequest, name: str) -> HTTPResponse:
    path = request.app.ctx.media.photo_path(name)
    if path is None:
        raise NotFound("Not found.")
    return await file(
        path,
        mime_type=CONTENT_TYPES[path.suffix.lstrip(".")],
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=86400"},
    )
