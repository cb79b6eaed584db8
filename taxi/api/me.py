"""The caller's own account over HTTP: ``/api/me/`` (read, rename, delete) and ``/api/me/photo/`` (replace)."""

from __future__ import annotations

import logging

from sanic import Blueprint, HTTPResponse

from taxi.api.common import body_of, json_response
from taxi.api.context import TaxiRequest
from taxi.api.guard import authenticate
from taxi.errors import BrokerUnavailable, ValidationFailed
from taxi.schemas import parse_password, parse_profile

log = logging.getLogger("taxi.accounts")

bp = Blueprint("me", url_prefix="/api/me")

ACCOUNT_DELETED = 1008  # policy violation: the socket's user no longer exists


@bp.get("/")
async def me(request: TaxiRequest) -> HTTPResponse:
    caller = await authenticate(request)
    return json_response(request.app.ctx.profiles.me(caller))


@bp.patch("/")
async def rename(request: TaxiRequest) -> HTTPResponse:
    caller = await authenticate(request)
    if not request.body:
        raise ValidationFailed.field("non_field_errors", "No body: send a JSON object with first_name or last_name.")
    change = parse_profile(body_of(request))
    return json_response(await request.app.ctx.profiles.rename(caller, change))


@bp.put("/photo/")
async def change_photo(request: TaxiRequest) -> HTTPResponse:
    caller = await authenticate(request)
    body_of(request)  # a body that is not a form is a 415, as everywhere
    upload = request.files.get("photo") if request.files else None
    if upload is None:
        raise ValidationFailed.field("photo", "No file was submitted: send the photo as multipart/form-data.")
    return json_response(await request.app.ctx.profiles.change_photo(caller, upload.body))


@bp.delete("/")
async def delete_account(request: TaxiRequest) -> HTTPResponse:
    caller = await authenticate(request)
    password = parse_password(body_of(request))
    ctx = request.app.ctx
    await ctx.profiles.delete(caller, password)
    try:
        await ctx.relay.close_user(caller.id, ACCOUNT_DELETED, "account deleted")
    except BrokerUnavailable as exc:
        # The account is gone either way: a socket on another worker is refused at its next message.
        log.warning("user %d deleted; sockets on other workers not told: %r", caller.id, exc)
    log.info("user %d deleted their account", caller.id)
    return HTTPResponse(status=204)
