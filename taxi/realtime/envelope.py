"""The broker payload: one frame and what every worker must know to deliver it.

Text, so that it crosses Redis as it is: a header line, then the frame. The header's first word is the
session not to deliver to (it was answered directly; ``-`` for none); then optional words:
``end`` (the group's last event), ``v2`` (only sockets of protocol version 2), ``only=<ids>`` (only the sockets
of these users), ``skip=<ids>`` (not those of these users), ``latest=<key>`` (a frame that supersedes the
previous one of the same key: a socket that is behind gets the newest, not a backlog), ``seq=<key>:<n>`` (the
frame is number n of a sequence: a socket that already has n or later of that key does not get it), ``leave=<ids>``
(once delivered, the sockets of these users leave the group on every worker).
"""

from __future__ import annotations

from typing import NamedTuple

NO_ORIGIN = "-"
END = "end"
V2 = "v2"


class Envelope(NamedTuple):
    frame: str
    exclude: str | None = None  # a session id
    end: bool = False  # the group's last event: every worker drops the group once it has delivered it
    min_version: int = 1
    only: frozenset[int] | None = None  # user ids; None: every member
    skip: frozenset[int] = frozenset()
    latest: str | None = None
    seq: tuple[str, int] | None = None  # (key, number): e.g. a trip's id and version
    leave: frozenset[int] = frozenset()  # users whose sockets leave the group once it is delivered


def _ids(values: frozenset[int]) -> str:
    return ",".join(map(str, sorted(values)))


def wrap(
    frame: str,
    exclude: str | None = None,
    end: bool = False,
    *,
    min_version: int = 1,
    only: frozenset[int] | None = None,
    skip: frozenset[int] = frozenset(),
    latest: str | None = None,
    seq: tuple[str, int] | None = None,
    leave: frozenset[int] = frozenset(),
) -> str:
    words = [exclude or NO_ORIGIN]
    if end:
        words.append(END)
    if min_version >= 2:
        words.append(V2)
    if only is not None:
        words.append(f"only={_ids(only)}")
    if skip:
        words.append(f"skip={_ids(skip)}")
    if latest:
        words.append(f"latest={latest}")
    if seq is not None:
        words.append(f"seq={seq[0]}:{seq[1]}")
    if leave:
        words.append(f"leave={_ids(leave)}")
    return " ".join(words) + "\n" + frame


def unwrap(payload: str) -> Envelope:
    header, _, frame = payload.partition("\n")
    origin, *words = header.split(" ")
    fields: dict[str, object] = {"exclude": None if origin == NO_ORIGIN else origin}
    for word in words:
        name, _, value = word.partition("=")
        if name == END:
            fields["end"] = True
        elif name == V2:
            fields["min_version"] = 2
        elif name in ("only", "skip", "leave"):
            fields[name] = frozenset(int(v) for v in value.split(",") if v)
        elif name == "latest":
            fields["latest"] = value
        elif name == "seq":
            key, _, number = value.rpartition(":")
            fields["seq"] = (key, int(number))
    return Envelope(frame, **fields)  # type: ignore[arg-type]
