"""Accounts over HTTP: sign up (JSON or multipart with a photo), log in, refresh, log out."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse

from taxi.api.common import body_of, json_response
from taxi.api.context import TaxiRequest
from taxi.api.guard import authenticate
from taxi.errors import ValidationFailed
from taxi.schemas import parse_log_in, parse_sign_up, parse_token_field

bp = Blueprint("auth", url_prefix="/api")


@bp.post("/sign_up/")
async def sign_up(request: TaxiRequest) -> HTTPResponse:
    ctx = request.app.ctx
    await ctx.accounts.check_sign_up_rate(request.remote_addr or request.ip)
    form = parse_sign_up(body_of(request))
    upload = request.files.get("photo") if request.files else None
    photos = await ctx.media.store_photo(upload.body) if upload is not None else None
    if photos is None and request.form and request.form.get("photo"):
        raise ValidationFailed.field("photo", "The submitted data was not a file. Check the encoding type on the form.")
    try:
        user = await ctx.accounts.sign_up(form, photos)
    except BaseException:
        if photos is not None:
            await ctx.media.discard(photos)
        raise
    if photos is not None:
        await ctx.media.settle(photos)
    return json_response(user, status=201)


@bp.post("/log_in/")
async def log_in(request: TaxiRequest) -> HTTPResponse:
    username, password = parse_log_in(body_of(request))
    address = request.remote_addr or request.ip
    return json_response(await request.app.ctx.accounts.log_in(username, password, address))


@bp.post("/token/refresh/")
async def refresh(request: TaxiRequest) -> HTTPResponse:
    token = parse_token_field(body_of(request))
    return json_response(await request.app.ctx.accounts.refresh(token))


@bp.post("/log_out/")
async def log_out(request: TaxiRequest) -> HTTPResponse:
    caller = await authenticate(request)
    token = parse_token_field(body_of(request))
    await request.app.ctx.accounts.log_out(caller, token)
    return HTTPResponse(status=204)
