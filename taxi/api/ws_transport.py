"""The socket transport adapter: how a frame reaches a Sanic WebSocket, including the direct write, how a
text frame that is not UTF-8 is refused, and how an idle socket is kept small.

A broadcast runs ``Session.offer`` once per member; writing an idle socket's frame straight to its transport
spares waking its writer task (half the CPU of a broadcast). That reads Sanic's WebSocket internals, so it is
kept here, behind one function, and pinned: a test fails when Sanic is not the version it was checked with.

Memory: an idle socket's largest Sanic objects were asyncio primitives that each allocate a deque at once (about
700 bytes each, most of it an empty block). ``LeanEvent`` and the assembler below leave those out
(``scripts/socket_memory`` measures where an idle socket's bytes go).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import sanic
from sanic.server.protocols import websocket_protocol
from sanic.server.websockets.frame import WebsocketFrameAssembler
from sanic.server.websockets.impl import WebsocketImplProtocol
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

from taxi.realtime import Session
from taxi.realtime.meter import NO_METER, Meter

log = logging.getLogger("taxi.socket")

# The Sanic release whose WebsocketImplProtocol internals ``direct_writer`` and ``refuse_invalid_utf8`` were
# written against.
WRITTEN_FOR_SANIC = "25.12.1"
INVALID_DATA_CLOSE = 1007  # RFC 6455 7.4.1: data inconsistent with the message type (text that is not UTF-8)


def session_for(
    ws: WebsocketImplProtocol, queue_size: int, label: str, user: int, version: int, meter: Meter = NO_METER
) -> Session:
    """The outbound side of one socket: queued sends through Sanic, direct writes while the socket is idle."""
    return Session(
        ws.send,
        ws.fail_connection,
        queue_size,
        label=label,
        write_now=direct_writer(ws),
        user=user,
        version=version,
        meter=meter,
    )


def refuse_invalid_utf8(ws: WebsocketImplProtocol) -> None:
    """Close the socket with 1007 when a text message is not valid UTF-8 (RFC 6455 8.1).

    Sanic decodes text frames in its frame assembler, inside a task of its own that nobody awaits: the
    UnicodeDecodeError was logged as "Task exception was never retrieved", the frame dropped and the socket left
    open. Call this before the socket's first ``recv`` (the handler's first step: no frame is assembled sooner).
    """
    ws.assembler = _CheckedAssembler(ws)


class LeanEvent:
    """``asyncio.Event`` (``wait``, ``set``, ``clear``, ``is_set``) with its list of waiters made on the first wait
    and dropped after the last: asyncio's allocates a deque per event, and an idle socket had eight of them."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[bool]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            for fut in self._waiters or ():
                if not fut.done():
                    fut.set_result(True)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        fut = asyncio.get_running_loop().create_future()
        waiters = self._waiters
        if waiters is None:
            waiters = self._waiters = []
        waiters.append(fut)
        try:
            await fut
            return True
        finally:
            waiters.remove(fut)
            if not waiters and self._waiters is waiters:
                self._waiters = None


class _CheckedAssembler(WebsocketFrameAssembler):
    """Sanic's frame assembler, failing the connection with 1007 where Sanic's would raise into the void; and
    without the objects Sanic's makes but an idle socket never uses: a Queue that nothing reads (four deques) and
    two deque-holding Events (``LeanEvent`` instead)."""

    __slots__ = ()

    def __init__(self, protocol: WebsocketImplProtocol) -> None:  # every slot of Sanic's __init__, leaner
        self.protocol = protocol
        self.read_mutex = asyncio.Lock()  # an asyncio.Lock makes its deque on first contention only
        self.write_mutex = asyncio.Lock()
        self.completed_queue = None  # type: ignore[assignment]  # made by Sanic's __init__, never used
        self.message_complete = LeanEvent()  # type: ignore[assignment]
        self.message_fetched = LeanEvent()  # type: ignore[assignment]
        self.get_in_progress = False
        self.decoder = None
        self.chunks = []
        self.chunks_queue = None
        self.paused = False

    async def put(self, frame: Frame) -> None:
        try:
            await super().put(frame)
        except UnicodeDecodeError:
            self.decoder = None
            self.chunks = []
            log.debug("socket closed with %d: a text frame was not UTF-8", INVALID_DATA_CLOSE)
            self.protocol.fail_connection(INVALID_DATA_CLOSE, "invalid UTF-8 in a text frame")


class _OptionalSubprotocols(ServerProtocol):
    """The websockets handshake, where a subprotocol is an option: a client that offers none of ours still connects
    (the reference client offers none). websockets' own rule fails such a handshake with "missing subprotocol"
    as soon as the server names any subprotocol."""

    def select_subprotocol(self, subprotocols: Sequence[Subprotocol]) -> Subprotocol | None:
        available = self.available_subprotocols or []
        return next((offered for offered in subprotocols if offered in available), None)


def allow_no_subprotocol() -> None:
    """Make Sanic's WebSocket handshake use ``_OptionalSubprotocols`` (it builds the websockets protocol itself, by
    this module-level name). Idempotent; called by ``create_app``."""
    websocket_protocol.ServerProtocol = _OptionalSubprotocols  # type: ignore[misc]


def direct_writer(ws: WebsocketImplProtocol) -> Callable[[str], bool]:
    """A synchronous send for a socket nobody else is writing to: frame the text and hand it to the transport.

    It declines (False, and the caller queues the frame for the writer task) whenever Sanic's own send path
    could be involved: a send or ping in progress (its lock is held), the transport's buffer over its
    high-water mark (backpressure), or a socket that is no longer open.
    """
    # No extension (compression) was negotiated (Sanic offers none): a server's frame is then the same bytes on
    # every socket, so a broadcast frames its text once (``_wire``) instead of once per member.
    plain = not ws.ws_proto.extensions

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
        if plain:
            transport.write(_wire(text))
            return True
        ws.ws_proto.send_text(text.encode())
        for data in ws.ws_proto.data_to_send():
            transport.write(data)
        return True

    return write


_last_framed: tuple[str | None, bytes] = (None, b"")


def _wire(text: str) -> bytes:
    """``text`` as an unmasked WebSocket text frame; the last one is kept, as a broadcast writes it to every member
    in turn (one worker, one thread: nothing else can run between them)."""
    global _last_framed
    if _last_framed[0] is not text:
        _last_framed = (text, Frame(Opcode.TEXT, text.encode()).serialize(mask=False))
    return _last_framed[1]


def sanic_version() -> str:
    return str(sanic.__version__)
