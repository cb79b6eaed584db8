"""Accounts over HTTP: sign up (JSON or multipart with a photo), log in, refresh, log out."""

from __future__ import annotations

from dataclasses import dataclass

from sanic import Blueprint, HTTPResponse, Request
from sanic_ext import openapi

from taxi.api.common import body_of, json_response
from taxi.api.guard import authenticate
from taxi.errors import ValidationFailed
from taxi.schemas import parse_log_in, parse_sign_up, parse_token_field

bp = Blueprint("auth", url_prefix="/api")


@dataclass
class SignUpBody:
    username: str
    password1: str
    password2: str
    group: str
    first_name: str = ""
    last_name: str = ""


@dataclass
class UserOut:
    id: int
    username: str
    first_name: str
    last_name: str
    group: str
    photo: str


@dataclass
class LogInBody:
    username: str
    password: str


@dataclass
class TokenPair:
    access: str
    refresh: str


@dataclass
class RefreshBody:
    refresh: str


@dataclass
class AccessToken:
    access: str


@bp.post("/sign_up/")
@openapi.summary("Create a rider or driver account")
@openapi.description(
    "JSON, or multipart/form-data with an optional `photo` (JPEG, PNG, WebP or GIF, at most 5 MB). "
    "400 gives `{field: [messages]}`; a password mismatch is reported under `non_field_errors`."
)
@openapi.body({"application/json": SignUpBody, "multipart/form-data": SignUpBody})
@openapi.response(201, {"application/json": UserOut}, "The new user")
@openapi.response(400, {"application/json": dict}, "Invalid fields")
async def sign_up(request: Request) -> HTTPResponse:
    ctx = request.app.ctx
    form = parse_sign_up(body_of(request))
    upload = request.files.get("photo") if request.files else None
    photo = await ctx.media.store_photo(upload.body) if upload is not None else None
    if photo is None and request.form and request.form.get("photo"):
        raise ValidationFailed.field("photo", "The submitted data was not a file. Check the encoding type on the form.")
    try:
        user = await ctx.accounts.sign_up(form, photo)
    except BaseException:
        if photo is not None:
            await ctx.media.discard(photo)
        raise
    return json_response(user, status=201)


@bp.post("/log_in/")
@openapi.summary("Exchange a username and password for an access and a refresh token")
@openapi.body({"application/json": LogInBody})
@openapi.response(200, {"application/json": TokenPair}, "Tokens")
@openapi.response(401, {"application/json": dict}, "Wrong username or password")
@openapi.response(429, {"application/json": dict}, "Too many attempts for this username or address (see Retry-After)")
async def log_in(request: Request) -> HTTPResponse:
    username, password = parse_log_in(body_of(request))
    address = request.remote_addr or request.ip
    return json_response(await request.app.ctx.accounts.log_in(username, password, address))


@bp.post("/token/refresh/")
@openapi.summary("Exchange a refresh token for a new access token")
@openapi.body({"application/json": RefreshBody})
@openapi.response(200, {"application/json": AccessToken}, "A new access token")
@openapi.response(401, {"application/json": dict}, "Invalid, expired or revoked refresh token")
async def refresh(request: Request) -> HTTPResponse:
    token = parse_token_field(body_of(request))
    return json_response(await request.app.ctx.accounts.refresh(token))


@bp.post("/log_out/")
@openapi.summary("Revoke a refresh token of the caller's")
@openapi.secured("token")
@openapi.body({"application/json": RefreshBody})
@openapi.response(204, None, "Revoked")
@openapi.response(401, {"application/json": dict}, "Not authenticated, or the refresh token is invalid")
async def log_out(request: Request) -> HTTPResponse:
    caller = await authenticate(request)
    token = parse_token_field(body_of(request))
    await request.app.ctx.accounts.log_out(caller, token)
    return HTTPResponse(status=204)
