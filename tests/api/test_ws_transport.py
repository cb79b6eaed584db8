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
