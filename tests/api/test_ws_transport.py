"""The direct write reads Sanic's WebSocket internals: pin the version it was checked against."""

from __future__ import annotations

import inspect

from sanic.server.protocols.base_protocol import SanicProtocol
from sanic.server.websockets.impl import WebsocketImplProtocol

from taxi.api import ws_transport


def test_sanic_is_the_version_the_direct_write_was_checked_against():
    # On a Sanic upgrade: re-check refuse_invalid_utf8() and direct_writer() against WebsocketImplProtocol (io_proto._can_write,
    # conn_mutex, ws_proto.state, ws_proto.send_text/data_to_send), then update WRITTEN_FOR_SANIC.
    assert ws_transport.sanic_version() == ws_transport.WRITTEN_FOR_SANIC


def test_the_internals_the_direct_write_uses_are_there():
    source = inspect.getsource(WebsocketImplProtocol)
    for name in ("self.io_proto", "self.conn_mutex", "self.ws_proto", "def fail_connection", "async def send"):
        assert name in source, name
    # The connection's protocol clears _can_write while the transport's buffer is over its high-water mark.
    assert "_can_write" in SanicProtocol.__slots__


def test_the_internals_the_utf8_check_uses_are_there():
    # refuse_invalid_utf8 replaces the assembler that process_events hands every data frame to.
    from sanic.server.websockets.frame import WebsocketFrameAssembler

    assert "self.assembler.put(" in inspect.getsource(WebsocketImplProtocol.process_events)
    assert "self.decoder.decode(" in inspect.getsource(WebsocketFrameAssembler.put)
    assert {"decoder", "chunks", "protocol"} <= set(WebsocketFrameAssembler.__slots__)


def test_the_lean_assembler_sets_what_sanics_assembler_sets():
    # _CheckedAssembler.__init__ replaces Sanic's: it must set every slot Sanic's __init__ sets (get_id and put_id
    # are declared but never set by Sanic).
    from sanic.server.websockets.frame import WebsocketFrameAssembler

    lean = ws_transport._CheckedAssembler(None)  # type: ignore[arg-type]
    for name in set(WebsocketFrameAssembler.__slots__) - {"get_id", "put_id"}:
        assert hasattr(lean, name), name
    assert "self.completed_queue" not in inspect.getsource(WebsocketFrameAssembler).replace(
        "self.completed_queue = asyncio.Queue", ""
    )  # nothing reads the queue we leave out


async def test_a_lean_event_wakes_every_waiter_and_can_be_cleared():
    import asyncio

    event = ws_transport.LeanEvent()
    waiters = [asyncio.ensure_future(event.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert not event.is_set() and not any(w.done() for w in waiters)
    waiters[0].cancel()  # a cancelled waiter leaves the others waiting
    await asyncio.sleep(0)
    event.set()
    assert [await w for w in waiters[1:]] == [True, True]
    assert await event.wait()  # set: returns at once
    event.clear()
    late = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    assert not late.done()
    event.set()
    assert await late


def test_a_frame_written_directly_is_the_bytes_websockets_itself_would_send():
    # The direct write frames a broadcast's text once for all its members: the bytes must be websockets' own, for
    # every length encoding (7-bit, 16-bit, 64-bit) and for text that is not ASCII; each text gets its own frame.
    from websockets.protocol import State
    from websockets.server import ServerProtocol

    reference = ServerProtocol()
    reference.state = State.OPEN
    for text in ('{"type":"echo.message"}', '{"a":"Café Zürich ✓ 東京"}' * 20, "x" * 70_000, '{"type":"error"}'):
        reference.send_text(text.encode())
        expected = b"".join(reference.data_to_send())
        assert ws_transport._wire(text) == expected
        assert ws_transport._wire(text) == expected, "asked again for the same text"
