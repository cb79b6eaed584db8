"""The socket transport adapter: how a frame reaches a Sanic WebSocket, including the direct write.

A broadcast runs ``Session.offer`` once per member; writing an idle socket's frame straight to its transport
spares waking its writer task (half the CPU of a broadcast). That reads Sanic's WebSocket internals, so it is
kept here, behind one function, and pinned: a test fails when Sanic is not the version it was checked with.
"""

from __future__ import annotations

from collections.abc import Callable

import sanic
from sanic.server.websockets.impl import WebsocketImplProtocol
from websockets.protocol import State

from taxi.realtime import Session

# The Sanic release whose WebsocketImplProtocol internals ``direct_writer`` was written against.
WRITTEN_FOR_SANIC = "25.12.1"


def session_for(ws: WebsocketImplProtocol, queue_size: int, label: str) -> Session:
    """The outbound side of one socket: queued sends through Sanic, direct writes while the socket is idle."""
    return Session(ws.send, ws.fail_connection, queue_size, label=label, write_now=direct_writer(ws))


def direct_writer(ws: WebsocketImplProtocol) -> Callable[[str], bool]:
    """A synchronous send for a socket nobody else is writing to: frame the text and hand it to the transport.

    It declines (False, and the caller queues the frame for the writer task) whenever Sanic's own send path
    could be involved: a send or ping in progress (its lock is held), the transport's buffer over its
    high-water mark (backpressure), or a socket that is no longer open.
    """

    def write(text: str) -> bool:
        io = ws.io_proto
        transport = io.transport if io is not None else None
        if (
            transport is None
            or transport.is_closing()
            or ws.conn_mutex.locked()
            or ws.ws_proto.state is not State.OPEN
            or not io._can_write.is_set()  # type: ignore[union-attr]
        ):
            return False
        ws.ws_proto.send_text(text.encode())
        for data in ws.ws_proto.data_to_send():
            transport.write(data)
        return True

    return write


def sanic_version() -> str:
    return str(sanic.__version__)
