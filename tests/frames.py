"""Frames checked against the AsyncAPI document (/docs/asyncapi.json), in both directions.

- From the server: every frame must be one of the messages the document says the server sends on a socket of that
  protocol version; an ``echo.message`` that is not the echo of something this socket sent must be a trip.
- From a client: every frame the server's own parser accepts must be one of the messages the document says the
  server receives (the document never refuses what the server takes). Whether the parser accepts it is asked of
  ``taxi.protocol`` itself; a payload naming another user counts as accepted when the user it names would have
  got it past the parser (that is a permission, not a shape; the parser checks it before the other fields).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import jsonschema_rs
import orjson

from taxi.api.asyncapi import CLIENT_MESSAGES, SERVER_MESSAGES, build_asyncapi
from taxi.errors import PermissionDenied, ValidationFailed
from taxi.protocol import CREATE_TRIP, ECHO, ProtocolError, identity_of, parse_command, parse_envelope
from tests.wsclient import Recording


@cache
def validators() -> dict[str, Any]:
    """One Draft 7 validator per message of the document (AsyncAPI schemas are a superset of Draft 7)."""
    components = build_asyncapi()["components"]
    return {
        name: jsonschema_rs.Draft7Validator({"components": components, "$ref": f"#/components/messages/{name}/payload"})
        for name in components["messages"]
    }


def matching(frame: Any, names: dict[str, Any], version: int) -> list[str]:
    return [
        name
        for name, message in names.items()
        if version in message["x-protocol-versions"] and validators()[name].is_valid(frame)
    ]


def server_accepts(text: str, version: int, caller_id: int = 1) -> bool:
    try:
        kind, data = parse_envelope(text)
        parse_command(kind, data, caller_id=caller_id, version=version)
    except PermissionDenied:
        # Refused for naming another author ("rider" of create.trip, "driver" of update.trip), which is checked
        # first: the shape is accepted if that author's own frame would be.
        author = identity_of(data.get("rider" if kind == CREATE_TRIP else "driver"), "author")
        return author is not None and author != caller_id and server_accepts(text, version, author)
    except (ProtocolError, ValidationFailed):
        return False
    return True


@dataclass
class Check:
    problems: list[str] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)  # (direction, message name) that real frames matched


def check(recordings: list[Recording]) -> Check:
    result = Check()
    for rec in recordings:
        echoed = set()
        for text in rec.sent:
            if not server_accepts(text, rec.version):
                continue
            frame = orjson.loads(text)
            if frame.get("type") == ECHO:
                echoed.add(orjson.dumps(frame.get("data"), option=orjson.OPT_SORT_KEYS))
            names = matching(frame, CLIENT_MESSAGES, rec.version)
            if not names:
                result.problems.append(
                    f"v{rec.version} client frame accepted by the server, not in the document: {text}"
                )
            result.seen.update(("client", name) for name in names)
        for text in rec.received:
            frame = orjson.loads(text)
            names = matching(frame, SERVER_MESSAGES, rec.version)
            if frame.get("type") == ECHO:
                own = orjson.dumps(frame.get("data"), option=orjson.OPT_SORT_KEYS) in echoed
                names = [n for n in names if n == ("echoReply" if own else "trip")]
            if not names:
                result.problems.append(f"v{rec.version} server frame not in the document: {text[:500]}")
            result.seen.update(("server", name) for name in names)
    return result
