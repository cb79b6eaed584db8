"""A version 2 socket's access token: the deadline it is held to, and its renewal through the one JWT guard.

The socket is closed with 4001 when its token expires, at the same moment the guard would start refusing that
token (its ``exp`` plus the clock leeway every token check allows). ``authenticate`` moves the deadline to the
newly presented token's. Version 1 sockets have none of this: the reference client never renews.
"""

from __future__ import annotations

from taxi.api.context import TaxiRequest
from taxi.api.guard import renewed_claims
from taxi.realtime import Session
from taxi.realtime.expiry import TokenExpiry
from taxi.security import CLOCK_LEEWAY


class SocketToken(TokenExpiry):
    """The token of one socket of user ``user_id``, expiring at ``exp`` (Unix time) unless renewed."""

    __slots__ = ("_request", "_user")

    def __init__(self, request: TaxiRequest, user_id: int, session: Session) -> None:
        super().__init__(session)
        self._request = request
        self._user = user_id

    def hold(self, exp: int) -> None:
        """Close the socket when a token expiring at ``exp`` is no longer accepted."""
        self.hold_until(exp + CLOCK_LEEWAY)

    async def renew(self, token: str) -> int:
        """Hold the socket to ``token`` (an access token of the same user); its ``exp``. TokenRefused for any
        other token: the socket keeps its current deadline."""
        claims = await renewed_claims(self._request, self._user, token)
        exp: int = claims["exp"]
        self.hold(exp)
        return exp
