"""A small WebSocket client for tests, on the websockets library (a real socket to a real server).

Every socket it opens records the text frames it sends and receives while a recording is on (``RECORDINGS``):
tests/conftest.py turns it on around every test and checks what was exchanged against /docs/asyncapi.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Data

from taxi.app import create_app
from taxi.config import Settings
from taxiload.harness import TIMEOUT_SCALE
from tests.support import bearer, log_in, serving_app, sign_up

WAIT = 5 * TIMEOUT_SCALE


@dataclass
class Recording:
    """The text frames one socket exchanged, in order, and its protocol version."""

    version: int
    sent: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)


RECORDINGS: list[Recording] | None = None  # a list while recording (set by tests/conftest.py)


class RecordingConnection(ClientConnection):
    """A websockets client connection that keeps every text frame in its ``recording``, if it has one."""

    recording: Recording | None = None

    async def send(self, message: Any, text: bool | None = None) -> None:
        if self.recording is not None and isinstance(message, str):
            self.recording.sent.append(message)
        await super().send(message, text=text)

    async def recv(self, decode: bool | None = None) -> Data:
        message = await super().recv(decode)
        if self.recording is not None and isinstance(message, str):
            self.recording.received.append(message)
        return message


async def connect(base: str, token: str, ready: bool = True, protocol: int = 1, **kwargs: Any) -> ClientConnection:
    """Open a socket; with ``ready``, wait for an echo so the server has joined its groups (as the protocol
    promises: a client that got an answer hears every later broadcast). ``protocol=2`` offers the taxi.v2
    subprotocol."""
    if protocol == 2:
        kwargs.setdefault("subprotocols", ["taxi.v2"])
    ws = await websockets.connect(
        f"{base}/taxi/?token={token}", open_timeout=WAIT, create_connection=RecordingConnection, **kwargs
    )
    if RECORDINGS is not None:
        query = parse_qs(urlsplit(ws.request.path).query) if ws.request else {}
        ws.recording = Recording(2 if ws.subprotocol == "taxi.v2" or query.get("protocol") == ["2"] else 1)
        RECORDINGS.append(ws.recording)
    if ready:
        await ws.send('{"type": "echo.message", "data": "ready?"}')
        reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        assert reply == {"type": "echo.message", "data": "ready?"}, reply
    return ws


async def recv(ws: ClientConnection, timeout: float = WAIT) -> dict[str, Any]:
    return dict(json.loads(await asyncio.wait_for(ws.recv(), timeout)))


async def send(ws: ClientConnection, kind: str, data: Any = None) -> None:
    await ws.send(json.dumps({"type": kind, "data": data}))


async def ask(ws: ClientConnection, kind: str, data: Any = None) -> dict[str, Any]:
    await send(ws, kind, data)
    return await recv(ws)


async def silent(ws: ClientConnection, seconds: float = 0.3) -> bool:
    """True if nothing arrives within ``seconds``."""
    try:
        msg = await asyncio.wait_for(ws.recv(), seconds * TIMEOUT_SCALE)
    except TimeoutError:
        return True
    raise AssertionError(f"expected silence, got {msg!r}")


async def closed(ws: ClientConnection, timeout: float = WAIT) -> tuple[list[dict[str, Any]], int | None, str | None]:
    """Everything the socket still receives until the server closes it, then the close code and reason (None, None
    when the connection dropped without a close frame)."""
    frames: list[dict[str, Any]] = []
    try:
        while True:
            frames.append(await recv(ws, timeout))
    except ConnectionClosed as exc:
        rcvd = exc.rcvd
        return frames, rcvd.code if rcvd else None, rcvd.reason if rcvd else None


async def still_open(ws: ClientConnection) -> None:
    """The socket answers an echo: it is open and its reader is working."""
    reply = await ask(ws, "echo.message", {"ping": 1})
    assert reply == {"type": "echo.message", "data": {"ping": 1}}, reply


class Live:
    """A test server (sanic-testing's reusable client) with helpers to run socket scenarios on its loop."""

    def __init__(self, client) -> None:
        self.client = client
        self.base = f"ws://127.0.0.1:{client.port}"

    def run(self, coro):
        """Run a client scenario on the loop the test server runs on."""
        return self.client._run(asyncio.wait_for(coro, 60 * WAIT / 5))

    def account(self, username: str, group: str = "rider") -> dict:
        user = sign_up(self.client, username, group=group)
        return user | log_in(self.client, username)

    def get(self, path: str, token: str):
        return self.client.get(path, headers=bearer(token))[1]


@contextlib.contextmanager
def serving(settings: Settings) -> Iterator[Live]:
    """A test server of its own for ``settings`` (when a test needs settings the shared fixtures do not have)."""
    app = create_app(settings, name=f"taxi_{secrets.token_hex(4)}")
    with serving_app(app) as client:
        yield Live(client)


def trip_request(pick_up: str = "A", drop_off: str = "B", **extra: Any) -> dict[str, Any]:
    return {"pick_up_address": pick_up, "drop_off_address": drop_off, **extra}


class RawSocket:
    """A WebSocket client on a bare TCP connection that reads only when told to (a client that stops reading)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int, path: str, rcvbuf: int = 4096) -> RawSocket:
        import base64
        import os
        import socket

        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**24)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def send_text(self, text: str, timeout: float = 1.0) -> None:
        """Send one masked text frame; TimeoutError when the server stops taking data."""
        await self.send_frame(text.encode(), timeout=timeout)

    async def send_frame(self, payload: bytes, opcode: int = 0x1, fin: bool = True, timeout: float = 1.0) -> None:
        """Send one masked frame of ``opcode`` (text by default; 0 continues a message) with ``payload`` as it is,
        valid or not; ``fin=False`` leaves the message open for continuation frames."""
        import os
        import struct

        mask = os.urandom(4)
        n = len(payload)
        opcode |= 0x80 if fin else 0
        if n < 126:
            head = struct.pack("!BB", opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + mask + masked)
        await asyncio.wait_for(self.writer.drain(), timeout)

    async def read_until_closed(self, timeout: float) -> tuple[int, int | None]:
        """Read everything the server sent; return (text frames read, close code or None if dropped)."""
        import struct

        frames = 0
        try:
            while True:
                b0, b1 = await asyncio.wait_for(self.reader.readexactly(2), timeout)
                n = b1 & 0x7F
                if n == 126:
                    (n,) = struct.unpack("!H", await self.reader.readexactly(2))
                elif n == 127:
                    (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
                payload = await self.reader.readexactly(n)
                if b0 & 0x0F == 0x8:
                    return frames, struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                frames += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            return frames, None

    def close(self) -> None:
        self.writer.close()
