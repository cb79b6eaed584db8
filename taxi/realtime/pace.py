"""How fast one socket may send: a token bucket for its message rate, and a meter that tells a flood from a burst.

The limit (``MessageLimit``) is shared by every socket of a worker; each socket's state (``Pace``) is four
numbers, made at its first message, so an idle socket costs nothing here. Time is passed in (seconds of a
monotonic clock): the rules below are pure and are tested without a server.

- **Rate**: a bucket of ``2 × per_second`` tokens, full at the first message, refilled at ``per_second``
  tokens a second; a counted message takes one token, and one that finds the bucket empty is refused.
  The bucket is kept as a single time (when it will be full again), as in GCRA.
- **Flood**: time is cut into one-second windows from the socket's first message, and every frame counts,
  refused or not, and whether or not it counts toward the rate (location fixes do not). A window that holds
  more than ``flood_factor × per_second`` frames is a flood second; when ``flood_seconds`` flood seconds
  follow one another with no other window between them, the next frame is answered ``CLOSE``, and every
  frame after it ``DROP``.
"""

from __future__ import annotations

import enum

FLOOD_FACTOR = 10
FLOOD_SECONDS = 10
_CLOSED = -1  # a Pace's streak once the socket was told to close


class Verdict(enum.Enum):
    ADMIT = "admit"  # process the message
    REFUSE = "refuse"  # over the rate: answer rate_limited, do not process it
    CLOSE = "close"  # flooded for FLOOD_SECONDS: answer once, then close the socket (1008)
    DROP = "drop"  # the socket is closing for flooding: neither process nor answer


class Pace:
    """One socket's state: when its bucket is full again, its current window, that window's frames, and how many
    flood seconds came just before it."""

    __slots__ = ("count", "full_at", "streak", "window")

    def __init__(self, now: float) -> None:
        self.full_at = now
        self.window = now
        self.count = 0
        self.streak = 0


class MessageLimit:
    """The rate every socket is held to: ``per_second`` messages a second, bursts of twice that."""

    __slots__ = ("flood", "flood_seconds", "interval", "per_second", "tolerance")

    def __init__(self, per_second: int, flood_factor: int = FLOOD_FACTOR, flood_seconds: int = FLOOD_SECONDS) -> None:
        if per_second < 1:
            raise ValueError(f"per_second: expected at least 1, got {per_second}")
        self.per_second = per_second
        self.interval = 1.0 / per_second  # what one message adds to the time the bucket is full again
        # A message is admitted while the bucket holds a token: while it is full again within burst - 1 intervals.
        self.tolerance = (2 * per_second - 1) * self.interval
        self.flood = flood_factor * per_second
        self.flood_seconds = flood_seconds

    def check(self, pace: Pace, now: float, counted: bool = True) -> Verdict:
        """Count one frame arriving at ``now``; ``counted`` is False for messages the rate does not apply to."""
        if pace.streak == _CLOSED:
            return Verdict.DROP
        if self._flooded(pace, now):
            pace.streak = _CLOSED
            return Verdict.CLOSE
        if not counted:
            return Verdict.ADMIT
        full_at = max(pace.full_at, now)
        if full_at - now > self.tolerance + 1e-9:  # (the epsilon absorbs float rounding of the intervals)
            return Verdict.REFUSE
        pace.full_at = full_at + self.interval
        return Verdict.ADMIT

    def _flooded(self, pace: Pace, now: float) -> bool:
        passed = now - pace.window
        if passed >= 1.0:
            whole = int(passed)
            # The window that just ended extends the streak only if it was a flood second and the window that
            # starts now follows it directly (whole > 1: at least one second without a frame came between).
            pace.streak = pace.streak + 1 if whole == 1 and pace.count > self.flood else 0
            pace.window += whole
            pace.count = 0
        pace.count += 1
        return pace.streak >= self.flood_seconds

    def retry_after(self, pace: Pace, now: float) -> float:
        """Seconds until the socket's bucket holds a token again (0 when it holds one now)."""
        return max(0.0, pace.full_at - now - self.tolerance)
