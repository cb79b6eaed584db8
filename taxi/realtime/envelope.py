"""The broker payload: one frame and what every worker must know to deliver it.

Text, so that it crosses Redis as it is: a header line, then the frame. The header holds the session not
to deliver to (it was answered directly; ``-`` for none) and, for a group's last event, `` end``.
"""

from __future__ import annotations

from typing import NamedTuple

NO_ORIGIN = "-"
END = "end"


class Envelope(NamedTuple):
    frame: str
    exclude: str | None  # a session id
    end: bool  # the group's last event: every worker drops the group once it has delivered it


def wrap(frame: str, exclude: str | None = None, end: bool = False) -> str:
    header = exclude or NO_ORIGIN
    return f"{header} {END}\n{frame}" if end else f"{header}\n{frame}"


def unwrap(payload: str) -> Envelope:
    header, _, frame = payload.partition("\n")
    origin, _, flag = header.partition(" ")
    return Envelope(frame, None if origin == NO_ORIGIN else origin, flag == END)
