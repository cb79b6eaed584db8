"""A socket held to its access token: closed with 4001 when the token expires, unless a newer one came first.

One timer per socket (``loop.call_later``), moved on each renewal and cancelled when the socket closes: no task,
no polling. What makes a token valid is the JWT guard's business; this only keeps the time.
"""

from __future__ import annotations

import asyncio
import time

from taxi.realtime.session import Session

TOKEN_EXPIRED = 4001
TOKEN_EXPIRED_REASON = "token expired"


class TokenExpiry:
    """Closes ``session`` (4001, "token expired") at ``deadline``, a Unix time, unless ``hold_until`` moves it."""

    __slots__ = ("_session", "_timer", "deadline")

    def __init__(self, session: Session) -> None:
        self._session = session
        self._timer: asyncio.TimerHandle | None = None
        self.deadline = 0.0

    def hold_until(self, deadline: float) -> None:
        """Keep the socket open until ``deadline`` (Unix time), replacing any earlier deadline."""
        self.release()
        if self._session.closed:
            return
        self.deadline = deadline
        # A wall-clock deadline on the loop's monotonic clock: converted once, now (tokens live minutes, and a
        # step of the wall clock meanwhile moves the close by that step at most).
        delay = max(0.0, deadline - time.time())
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def release(self) -> None:
        """Cancel the timer (the socket is closing, or a new deadline follows). Synchronous, for ``finally``."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        # Close now rather than after the queued frames: nothing more is sent on a credential that has expired.
        self._session.close(TOKEN_EXPIRED, TOKEN_EXPIRED_REASON)
