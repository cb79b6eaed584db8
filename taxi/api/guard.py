"""The one JWT check, for HTTP requests and for the WebSocket handshake alike.

It yields the caller as stored now (an access token of a deleted or deactivated user is refused)
or raises AuthenticationFailed, which HTTP answers with 401 and the socket route refuses the handshake with.
"""

from __future__ import annotations

from typing import Any

from taxi.api.context import TaxiRequest
from taxi.errors import AuthenticationFailed, TokenRefused
from taxi.security import ACCESS
from taxi.services.accounts import Caller, active_user


def bearer_token(request: TaxiRequest) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    header: str | None = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationFailed("Authorization header must be: Bearer <access token>.", code="bad_authorization")
    return token.strip()


def access_claims(request: TaxiRequest, token: str | None) -> dict[str, Any]:
    """The claims of a valid access token (signature, expiry, type); raise AuthenticationFailed otherwise."""
    claims: dict[str, Any] = request.app.ctx.tokens.decode(token, ACCESS)
    return claims


async def authenticate_token(request: TaxiRequest, token: str | None) -> Caller:
    """The active user an access token names; raise AuthenticationFailed otherwise."""
    caller, _ = await authenticate_claims(request, token)
    return caller


async def authenticate_claims(request: TaxiRequest, token: str | None) -> tuple[Caller, dict[str, Any]]:
    """The active user an access token names, and the token's claims; raise AuthenticationFailed otherwise."""
    claims = access_claims(request, token)
    return await active_user(claims["id"]), claims


async def renewed_claims(request: TaxiRequest, user_id: int, token: str | None) -> dict[str, Any]:
    """The claims of ``token`` when it may renew a socket of ``user_id``: an access token the guard accepts, of
    that same user. TokenRefused otherwise (the socket keeps its current token); AuthenticationFailed, as on every
    write, when the user was deactivated since connecting."""
    try:
        claims = access_claims(request, token)
    except AuthenticationFailed as exc:
        raise TokenRefused(exc.detail) from None
    if claims["id"] != user_id:
        raise TokenRefused("Token belongs to another user: a socket can only be renewed by its own user.")
    await active_user(user_id)
    return claims


async def authenticate(request: TaxiRequest) -> Caller:
    """Authenticate an HTTP request by its Bearer header and remember the caller on ``request.ctx``."""
    caller = await authenticate_token(request, bearer_token(request))
    request.ctx.caller = caller
    return caller
