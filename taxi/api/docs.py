"""``/docs`` without the internet: the Swagger UI files, served from the installed swagger-ui-py package; and the
AsyncAPI document of the ``/taxi/`` WebSocket at ``/docs/asyncapi.json``.

sanic-ext's Swagger page asks for ``<OAS_UI_SWAGGER_CDN_URL>/<version>/<file>.min.js``; the CDN URL points here,
and each name it asks for maps to the file the package ships (Apache-2.0, its LICENSE served beside them).
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

from sanic import Blueprint
from sanic.response import HTTPResponse, file, json

from taxi.api.asyncapi import build_asyncapi
from taxi.api.context import TaxiRequest
from taxi.errors import NotFound

bp = Blueprint("docs", url_prefix="/docs")

ASSETS_URL = "/docs/assets"
# swagger-ui-py's release, and the Swagger UI it bundles: the page's "version" path segment (any value works).
ASSETS_VERSION = "swagger-ui-py-25.7.1"
# What sanic-ext's page asks for -> the file in swagger_ui/static.
_FILES = {
    "swagger-ui.min.css": "swagger-ui.css",
    "swagger-ui-bundle.min.js": "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.min.js": "swagger-ui-standalone-preset.js",
    "LICENSE": "LICENSE",
}
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8", "": "text/plain; charset=utf-8"}


@cache
def static_folder() -> Path:
    """swagger-ui-py's folder of Swagger UI files, found without importing the package (it would import jinja2)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("swagger-ui-py is not installed (requirements.txt pins it): /docs needs its files")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@bp.get("/assets/<version:str>/<name:str>")
async def asset(request: TaxiRequest, version: str, name: str) -> HTTPResponse:
    served = _FILES.get(name)
    if served is None or version != ASSETS_VERSION:
        raise NotFound("No such documentation file.")
    path = static_folder() / served
    headers = {"Cache-Control": "public, max-age=86400"}
    return await file(path, mime_type=_TYPES[Path(served).suffix], headers=headers)


@cache
def _asyncapi() -> dict[str, object]:
    return build_asyncapi()


@bp.get("/asyncapi.json")
async def asyncapi(request: TaxiRequest) -> HTTPResponse:
    return json(_asyncapi())
