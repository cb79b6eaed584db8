"""The HTTP connection: time limits for clients that send slowly, and a request line with control bytes answered 400.

Sanic measures its REQUEST_TIMEOUT and RESPONSE_TIMEOUT from the last bytes received, so a client that sends a header
line every few seconds, or one body byte at a time, holds a connection (and its worker's memory) for as long as it
likes. ``GuardedProtocol`` waits for data with deadlines instead: every wait for bytes goes through
``receive_more``, and there the stage of the request decides the deadline.

- the first request of a connection: its headers complete within ``header_timeout`` of the connection opening;
  a later one (on a kept-alive connection) within ``header_timeout`` of its first byte (the idle wait between
  requests stays under Sanic's KEEP_ALIVE_TIMEOUT);
- a body: ``body_grace`` seconds, plus one second per ``body_min_rate`` bytes received so far.

Sanic builds its connections with the protocol class it was started with; ``install`` (a ``main_process_start``
listener) swaps in ours, before the workers are started. Written against Sanic ``WRITTEN_FOR_SANIC``
(taxi/api/ws_transport.py): ``Http`` keeps ``protocol.receive_more`` as ``_receive_more``.
"""

from __future__ import annotations

import asyncio
import re
from time import perf_counter
from typing import Any

from sanic import Sanic
from sanic.exceptions import BadURL, RequestTimeout
from sanic.http import Http, Stage
from sanic.server.protocols.websocket_protocol import WebSocketProtocol

from taxi.api.ws_transport import LeanEvent

_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class GuardedHttp(Http):
    """Sanic's HTTP/1.1 state machine (one per connection), noting when the connection opened, how many requests it
    began and when the current request's header began; and no crash on a request line that holds control bytes."""

    __slots__ = ("head_started", "opened_at", "requests")

    def __init__(self, protocol: Any) -> None:
        super().__init__(protocol)
        self.opened_at = asyncio.get_running_loop().time()
        self.requests = 0
        self.head_started: float | None = None

    def init_for_request(self) -> None:
        super().init_for_request()
        self.requests += 1
        self.head_started = None

    def create_empty_request(self) -> None:
        # Sanic answers a malformed request line with a stand-in request that carries the same URL; with a control
        # byte in it that request could not be built either, and the connection closed with a traceback, no answer.
        if self.url:
            self.url = escape_controls(self.url)
        super().create_empty_request()

    async def http1_request_header(self) -> None:
        try:
            await super().http1_request_header()
        except BadURL:
            raise BadURL("Malformed request target: use printable ASCII, percent-encode anything else.") from None

    def deadline(self, header_timeout: float, body_grace: float, body_min_rate: float) -> float | None:
        """When the bytes being waited for must have arrived (loop time), or None for no limit of ours."""
        first = self.requests <= 1
        if self.stage is Stage.IDLE:
            # Waiting for a request's first byte: bounded here on a new connection only.
            return self.opened_at + header_timeout if first else None
        if self.stage is Stage.REQUEST:
            if self.head_started is None:
                self.head_started = self.opened_at if first else asyncio.get_running_loop().time()
            return self.head_started + header_timeout
        if self.stage is Stage.HANDLER and self.request_body and self.perft0 is not None:
            # The handler stage began when the header was complete.
            body_started = asyncio.get_running_loop().time() - (perf_counter() - self.perft0)
            received: int = (self.request_bytes or 0) - (self.request_bytes_left or 0)
            return float(body_started + body_grace + received / body_min_rate)
        return None


class GuardedProtocol(WebSocketProtocol):
    """Sanic's connection protocol, with deadlines on receiving a request's header and body; the event it waits on for
    request bytes is a ``LeanEvent`` (asyncio's allocates a deque, per connection)."""

    HTTP_CLASS = GuardedHttp

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._data_received = LeanEvent()  # type: ignore[assignment]

    async def receive_more(self) -> None:
        http: GuardedHttp = self._http
        settings = self.app.ctx.settings
        deadline = http.deadline(settings.header_timeout, settings.body_grace, settings.body_min_rate)
        if deadline is None:
            await super().receive_more()
            return
        stage = http.stage
        try:
            async with asyncio.timeout_at(deadline):
                await super().receive_more()
        except TimeoutError:
            if stage is Stage.IDLE:  # nothing was asked: close without an answer, as Sanic's keep-alive limit does
                raise asyncio.CancelledError from None
            http.keep_alive = False
            http.request_body = None  # nothing more is read from this client
            what = "header" if stage is Stage.REQUEST else "body"
            raise RequestTimeout(f"Request {what} not received in time.") from None


def escape_controls(url: str) -> str:
    """``url`` with each control byte, space and DEL percent-encoded."""
    return _CONTROL.sub(lambda m: f"%{ord(m[0]):02X}", url)


def install(app: Sanic[Any, Any]) -> None:
    """Serve every connection through ``GuardedProtocol`` (call it in ``main_process_start``: the workers are given
    the server settings after that)."""
    for info in app.state.server_info:
        if info.settings.get("protocol") in (None, WebSocketProtocol):
            info.settings["protocol"] = GuardedProtocol
