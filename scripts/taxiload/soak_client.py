"""One soak user's WebSocket, kept connected: it reconnects after any close, tells replies from broadcasts, and
records every connection's life and what it heard."""

from __future__ import annotations

import asyncio
import collections
import json
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect

from taxiload.accounts import Account
from taxiload.soak_model import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    NOT_NOTIFIED,
    OPEN_TIMEOUT,
    READY,
    REPLY_TIMEOUT,
    Life,
    is_ready,
    mono,
)

if TYPE_CHECKING:
    from taxiload.soak_ledger import Ledger


class Client:
    """One user's socket, kept connected: reconnects with backoff after any close and marks itself for a re-fetch."""

    def __init__(self, soak: Ledger, account: Account, label: str, partner: int | None = None) -> None:
        self.soak, self.account, self.label = soak, account, label
        self.partner = partner  # a pair's driver: the user id of its rider
        self.lives: list[Life] = []
        self.ws: ClientConnection | None = None
        self.up = asyncio.Event()
        self.waiter: tuple[Callable[[dict[str, Any]], bool], asyncio.Future[tuple[str, Any]]] | None = None
        self.want: dict[str, asyncio.Future[float]] = {}
        self.last_ack: tuple[str, str] | None = None
        self.heard_requested: set[str] = set()  # a pair's driver: REQUESTED trips of its rider it heard
        self.needs_resync = False
        self.open_failures: collections.Counter[str] = collections.Counter()
        self.closes: collections.Counter[str] = collections.Counter()
        self.task: asyncio.Task[None] | None = None

    @property
    def driver(self) -> bool:
        return self.account.group == "driver"

    async def keep_connected(self) -> None:
        backoff = BACKOFF_MIN
        while not self.soak.closing:
            try:
                life = await self._open()
                if life is not None:
                    await self._read(life)
                    if self.soak.closing:
                        return
                    if (life.closed or 0) - life.ready > 1.0:
                        backoff = BACKOFF_MIN
                        continue  # reconnect at once after a connection that worked
            except Exception as exc:  # a bug here must not silently end the reconnects
                self.soak.problem(f"{self.label}: the connection loop failed: {exc!r}")
            await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _open(self) -> Life | None:
        url = f"{self.soak.ws_base}/taxi/?token={self.account.access}"
        try:
            ws = await ws_connect(url, open_timeout=OPEN_TIMEOUT, close_timeout=2, max_size=2**20)
        except websockets.exceptions.InvalidStatus as exc:
            self.open_failures[f"HTTP {exc.response.status_code}"] += 1
            return None
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
            self.open_failures[type(exc).__name__] += 1
            return None
        life = Life(gen=len(self.lives) + 1)
        try:
            await ws.send(json.dumps(READY))
            async with asyncio.timeout(OPEN_TIMEOUT):
                while True:
                    raw = await ws.recv()
                    if is_ready(raw):
                        break
                    self._dispatch(life, raw)  # a broadcast may come before the echo: it has joined its groups
        except websockets.exceptions.ConnectionClosed as exc:
            self.open_failures[f"closed {exc.rcvd.code if exc.rcvd else 1006} before ready"] += 1
            return None
        except TimeoutError:
            self.open_failures["no ready echo"] += 1
            ws.transport.abort()
            return None
        life.ready = mono()
        self.lives.append(life)
        self.ws = ws
        self.up.set()
        if life.gen > 1:
            self.needs_resync = True  # re-fetch its trips over HTTP before relying on what it knew
            self.soak.on_reconnect(self, life)
        return life

    async def _read(self, life: Life) -> None:
        ws = self.ws
        assert ws is not None
        try:
            async for raw in ws:
                self._dispatch(life, raw)
        except websockets.exceptions.ConnectionClosed:
            pass
        finally:
            life.closed = mono()
            life.code = ws.close_code or 1006
            self.closes[str(life.code)] += 1
            self.ws = None
            self.up.clear()
            if self.waiter is not None and not self.waiter[1].done():
                self.waiter[1].set_result(("lost", life.code))
            self.soak.on_close(self, life)

    def _dispatch(self, life: Life, raw: str | bytes) -> None:
        now = mono()
        try:
            msg = json.loads(raw)
            kind, data = msg["type"], msg.get("data")
        except (ValueError, TypeError, KeyError):
            self.soak.problem(f"{self.label}: a frame that is not the envelope: {raw[:200]!r}")
            return
        waiter = self.waiter if self.waiter is not None and not self.waiter[1].done() else None
        if kind == "error":
            data = data if isinstance(data, dict) else {}
            if data.get("code") == "unavailable" and NOT_NOTIFIED in str(data.get("detail")):
                self.soak.count("notice: change saved, broadcast failed")
                if self.last_ack is not None:  # it follows the reply it is about, on the same socket
                    self.soak.not_notified.add(self.last_ack)
            elif waiter is not None:
                waiter[1].set_result(("error", data))
            else:
                self.soak.problem(f"{self.label}: an error frame it did not ask for: {data}")
            return
        if kind != "echo.message" or not isinstance(data, dict) or "id" not in data or "status" not in data:
            self.soak.problem(f"{self.label}: an unexpected frame: {raw[:200]!r}")
            return
        if waiter is not None and waiter[0](data):
            waiter[1].set_result(("ack", data))
            self.last_ack = (data["id"], data["status"])
            return
        # A broadcast (the server never echoes a change back to its sender twice).
        life.heard.add((data["id"], data["status"]))
        self.soak.on_broadcast(self, now)
        rider = data.get("rider") or {}
        if self.partner is not None and data["status"] == "REQUESTED" and rider.get("id") == self.partner:
            self.heard_requested.add(data["id"])
            fut = self.want.pop(data["id"], None)
            if fut is not None and not fut.done():
                fut.set_result(now)

    async def request(
        self, kind: str, data: dict[str, Any], match: Callable[[dict[str, Any]], bool]
    ) -> tuple[str, Any]:
        """Send one message and wait for its reply: ("ack", trip), ("error", data), ("down", None) when it could not be
        sent, ("lost", close code) when the socket closed before the reply, or ("timeout", None)."""
        ws = self.ws
        if ws is None:
            return "down", None
        fut: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiter = (match, fut)
        try:
            try:
                await ws.send(json.dumps({"type": kind, "data": data}))
            except websockets.exceptions.ConnectionClosed:
                return ("lost", None) if fut.done() else ("down", None)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), REPLY_TIMEOUT)
            except TimeoutError:
                self.soak.problem(f"{self.label}: no reply to {kind} within {REPLY_TIMEOUT:.0f} s (socket dropped)")
                ws.transport.abort()
                return "timeout", None
        finally:
            self.waiter = None

    async def wait_up(self, until: float) -> bool:
        if self.up.is_set():
            return True
        try:
            await asyncio.wait_for(self.up.wait(), max(until - mono(), 0.01))
            return True
        except TimeoutError:
            return False

    def spanning(self, start: float, end: float) -> Life | None:
        """The connection that was ready by ``start`` and still open at ``end``, if there was one."""
        for life in self.lives:
            if life.ready <= start and (life.closed is None or life.closed >= end):
                return life
        return None
