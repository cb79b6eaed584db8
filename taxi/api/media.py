"""Stored photos, served by the names the server gave them (or, from a bucket, redirected to a presigned URL);
nothing else under /media/ exists."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse, redirect

from taxi.api.context import TaxiRequest
from taxi.errors import NotFound

bp = Blueprint("media", url_prefix="/media")

# A photo's name is random and never reused, so what it names never changes: caches may keep it for a year.
PHOTO_CACHE_CONTROL = "public, max-age=31536000, immutable"


@bp.get("/photos/<name:str>")
async def photo(request: TaxiRequest, name: str) -> HTTPResponse:
    found = await request.app.ctx.media.locate(name)
    if found is None:
        raise NotFound("Not found.")
    if isinstance(found, str):
        # The bucket serves it: a presigned URL, cached (by this client only) for half of its lifetime.
        lifetime = request.app.ctx.settings.s3_url_lifetime
        return redirect(found, headers={"Cache-Control": f"private, max-age={lifetime // 2}"})
    body, content_type = found
    return HTTPResponse(body, content_type=content_type, headers={"Cache-Control": PHOTO_CACHE_CONTROL})
