"""GuardedProtocol reads Sanic's HTTP/1.1 internals: check they are where it expects them (the behaviour itself is
tested against a real server in tests/processes/test_hostile_connections.py)."""

from __future__ import annotations

import inspect

from sanic.http import Http
from sanic.mixins.startup import StartupMixin

from taxi.api import connection, ws_transport


def test_the_internals_the_connection_limits_use_are_there():
    assert ws_transport.sanic_version() == ws_transport.WRITTEN_FOR_SANIC
    # Every wait for bytes goes through the protocol's receive_more, kept by Http at its creation.
    assert "self._receive_more = protocol.receive_more" in inspect.getsource(Http.__init__)
    for name in ("perft0", "request_bytes_left", "request_body", "stage", "url"):
        assert name in Http.__slots__, name
    assert "self.perft0 = perf_counter()" in inspect.getsource(Http.http1)
    assert "def create_empty_request" in inspect.getsource(Http)
    # The workers get the protocol from the server settings, after main_process_start has run.
    serve = inspect.getsource(StartupMixin.serve)
    assert serve.index("trigger_events(main_start") < serve.index("**primary_server_info.settings")


def test_control_bytes_in_a_url_are_escaped_for_the_error_answer():
    assert connection.escape_controls("/a\x00b\x7f c\x1b") == "/a%00b%7F%20c%1B"
