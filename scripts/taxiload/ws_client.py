"""The WebSocket client of bench_ws: one socket (picows, or the websockets library as the fallback), many sockets
opened with bounded concurrency and closed together, and the frames the benchmark sends and parses."""

from __future__ import annotations

import asyncio
import collections
import os
import time
from array import array
from collections.abc import Callable
from typing import Any

import orjson

try:
    if os.environ.get("TAXI_BENCH_CLIENT") == "websockets":  # to compare clients, or to check the fallback
        raise ImportError("websockets asked for")
    import picows
except ImportError:  # the fallback is much slower: the client may then be what bounds the figures
    picows = None  # type: ignore[assignment]
    import websockets
    from websockets.asyncio.client import connect as websockets_connect

CLIENT = "picows" if picows is not None else "websockets"
READY = b'{"type":"echo.message","data":"ready"}'
ERROR_PREFIX = b'{"type":"error"'
BENCH_KEY = b'"pick_up_address":"bench:'  # broadcast trips: pick_up_address = bench:<send time_ns>:<rider>:<seq>
OPEN_TIMEOUT = 30.0

Handler = Callable[["Conn", bytes], None]


class Conn:
    """One client socket. ``on(conn, payload)`` gets each text frame as bytes; the ready echo is taken first."""

    __slots__ = ("close_code", "closed", "count", "handler", "on", "ready", "transport", "ws")

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.on: Handler = self._before_ready
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.count = 0  # bench frames received (broadcast and connections scenarios)
        self.closed = False
        self.close_code: int | None = None
        self.transport: Any = None
        self.ws: Any = None

    def _before_ready(self, conn: Conn, payload: bytes) -> None:
        if payload == READY and not self.ready.done():
            self.ready.set_result(None)
            self.on = self.handler
        else:
            self.handler(conn, payload)

    def lost(self, code: int | None) -> None:
        self.closed = True
        self.close_code = code
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before the ready echo (code {code})"))

    async def open(self, url: str) -> None:
        """Connect, send the ready echo and wait for it: then the server has put the socket in its groups."""
        if picows is not None:
            self.transport, _ = await picows.ws_connect(
                lambda: _PicowsListener(self),
                url,
                websocket_handshake_timeout=OPEN_TIMEOUT,
                read_buffer_init_size=4096,
                enable_auto_pong=True,
            )
        else:
            self.ws = await websockets_connect(url, compression=None, ping_interval=None, open_timeout=OPEN_TIMEOUT)
            asyncio.get_running_loop().create_task(self._read_websockets())
        self.send(b'{"type":"echo.message","data":"ready"}')
        await asyncio.wait_for(self.ready, OPEN_TIMEOUT)

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.send(picows.WSMsgType.TEXT, data)
        else:
            asyncio.get_running_loop().create_task(self.ws.send(data, text=True))

    async def _read_websockets(self) -> None:
        try:
            while True:
                data = await self.ws.recv(decode=False)
                self.on(self, data)
        except websockets.ConnectionClosed:
            self.lost(self.ws.close_code)

    def start_close(self) -> None:
        if self.transport is not None:
            if not self.transport.is_disconnected:
                self.transport.send_close(picows.WSCloseCode.OK)
        elif self.ws is not None:
            asyncio.get_running_loop().create_task(self.ws.close())

    async def wait_closed(self) -> None:
        if self.transport is not None:
            await self.transport.wait_disconnected()
        elif self.ws is not None:
            await self.ws.wait_closed()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.disconnect(graceful=False)
        elif self.ws is not None:
            self.ws.transport.abort()


if picows is not None:

    class _PicowsListener(picows.WSListener):
        def __init__(self, conn: Conn) -> None:
            super().__init__()
            self.conn = conn

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            kind = frame.msg_type
            if kind == picows.WSMsgType.TEXT:
                conn = self.conn
                conn.on(conn, frame.get_payload_as_bytes())
            elif kind == picows.WSMsgType.CLOSE:
                code = frame.get_close_code()
                self.conn.close_code = code.value if hasattr(code, "value") else int(code)
                transport.send_close(code)
                transport.disconnect()

        def on_ws_disconnected(self, transport: Any) -> None:
            self.conn.lost(self.conn.close_code)


async def open_many(urls: list[str], concurrency: int, handler: Handler) -> dict[str, Any]:
    """Open (and make ready) one socket per URL, at most ``concurrency`` at a time."""
    conns: list[Conn] = []
    open_us = array("q")
    failures: collections.Counter[str] = collections.Counter()
    gate = asyncio.Semaphore(concurrency)

    async def one(url: str) -> None:
        async with gate:
            start = time.perf_counter_ns()
            conn = Conn(handler)
            try:
                await conn.open(url)
            except Exception as exc:
                failures[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
                if conn.transport is not None or conn.ws is not None:
                    conn.abort()
                return
            open_us.append((time.perf_counter_ns() - start) // 1000)
            conns.append(conn)

    first = time.time_ns()
    await asyncio.gather(*(one(url) for url in urls))
    return {"conns": conns, "open_us": open_us, "failures": failures, "first_ns": first, "last_ns": time.time_ns()}


async def close_all(conns: list[Conn], timeout: float = 10.0) -> int:
    """Close handshake on every socket; abort what is still open after ``timeout``. Returns how many were aborted."""
    for conn in conns:
        conn.start_close()
    pending = [asyncio.ensure_future(conn.wait_closed()) for conn in conns if not conn.closed]
    if not pending:
        return 0
    _, still = await asyncio.wait(pending, timeout=timeout)
    for task in still:
        task.cancel()
    aborted = 0
    for conn in conns:
        if not conn.closed:
            conn.abort()
            aborted += 1
    return aborted


def trip_frame(address: str) -> bytes:
    return orjson.dumps({"type": "create.trip", "data": {"pick_up_address": address, "drop_off_address": "B"}})


def error_code(payload: bytes) -> str:
    try:
        data = orjson.loads(payload)["data"]
        return f"{data.get('code')}: {str(data.get('detail'))[:100]}"
    except Exception:
        return f"unparsable error frame {payload[:100]!r}"
