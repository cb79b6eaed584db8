"""Keepalive pings for every WebSocket of a worker, from one timer: how a dead peer is found.

Sanic's own keepalive is a task per socket that sleeps, pings and waits for the pong: a task, its coroutine, a
sleep's future and timer per idle socket, about 2 KiB each. Here the worker's sockets are spread over ``SLICES``
groups and one timer visits a group every ``interval / SLICES`` seconds, so each socket is visited once per
``interval``. A visit first checks the socket's previous ping: no pong since (a peer gone without a FIN, a
client that stopped reading) closes the socket with 1011, as Sanic's keepalive did; then it sends the next
ping. A dead peer is therefore closed between one and two intervals after its last pong.

The ping goes through Sanic's bookkeeping (``ws.pings``: its pong handler resolves and removes the entry), and
is written straight to the transport, like the direct write of ``ws_transport``; a socket in the middle of a
send is simply pinged on the next visit.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from sanic.server.websockets.impl import WebsocketImplProtocol
from websockets.protocol import State

log = logging.getLogger("taxi.socket")

SLICES = 20
PING_TIMEOUT_CLOSE = 1011  # what Sanic's keepalive closed with: "the server terminated the connection"


class Keepalive:
    """The worker's sockets and the payload of each one's unanswered ping (None when none is out)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._slices: list[dict[WebsocketImplProtocol, bytes | None]] = [{} for _ in range(SLICES)]
        self._where: dict[WebsocketImplProtocol, int] = {}
        self._next_slice = itertools.cycle(range(SLICES))
        self._visit = 0
        self._counter = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._where)

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.interval / SLICES, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def add(self, ws: WebsocketImplProtocol) -> None:
        index = next(self._next_slice)
        self._where[ws] = index
        self._slices[index][ws] = None

    def discard(self, ws: WebsocketImplProtocol) -> None:
        index = self._where.pop(ws, None)
        if index is not None:
            self._slices[index].pop(ws, None)

    def _tick(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self.interval / SLICES, self._tick)
        self._visit = (self._visit + 1) % SLICES
        group = self._slices[self._visit]
        for ws, payload in list(group.items()):
            try:
                group[ws] = self._check_and_ping(ws, payload)
            except Exception:  # one broken socket must not stop the pings of the others
                log.exception("keepalive ping failed")
                group[ws] = None

    def _check_and_ping(self, ws: WebsocketImplProtocol, payload: bytes | None) -> bytes | None:
        """The payload of the ping now out on ``ws``, or None; closes ``ws`` if its last ping went unanswered."""
        if payload is not None and payload in ws.pings:
            log.warning("socket closed with %d: no pong within %.0f s", PING_TIMEOUT_CLOSE, self.interval)
            ws.fail_connection(PING_TIMEOUT_CLOSE, "no pong to the keepalive ping")
            self.discard(ws)
            return None
        io = ws.io_proto
        transport = io.transport if io is not None else None
        if transport is None or transport.is_closing() or ws.conn_mutex.locked() or ws.ws_proto.state is not State.OPEN:
            return None  # closing, or a send in progress: ping it on the next visit
        payload = next(self._counter).to_bytes(8, "big")
        ws.pings[payload] = asyncio.get_running_loop().create_future()
        ws.ws_proto.send_ping(payload)
        for data in ws.ws_proto.data_to_send():
            transport.write(data)
        return payload
