"""``scripts/soak --disconnects``: phones that lose their sockets at random moments and resume.

Besides the pairs, riders and drivers with phones: protocol version 2 clients, one socket per user, that keep per
trip the copy with the highest version they have applied, and act on what they hold. A rider requests a trip
(with a ``request_id``) when it has none open and sometimes cancels it; a driver accepts a request it holds, moves
its trips on, and sometimes hands one back. A random phone's socket is dropped without a goodbye every
``--drop-every`` seconds on average; it comes back 0.1 to 2 s later and sends ``resume`` with what it holds (it
also resumes on ``resume.required``). After the load:

- **version regressions**: frames of a trip whose version was not newer than the one the phone held (must be 0);
- **lost events**: once the load and its broadcasts have stopped, a connected phone whose trip (as rider or
  driver) is held at another version than stored, or missing while open, or a request it holds as REQUESTED that
  has changed since: something happened while it was connected, and never reached it (must be 0);
- **stale views**: after every phone has connected and resumed once more, any trip it holds at another version
  than stored, or an open trip of its user it does not hold (must be 0).
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import websockets

from taxiload.accounts import Account

Stored = dict[str, tuple[str, int, int | None, int | None]]  # trip id -> (status, version, rider id, driver id)
OPEN = ("REQUESTED", "STARTED", "IN_PROGRESS")
TIMEOUT = 10.0


class Phone:
    def __init__(self, base: str, account: Account, peers: frozenset[int] = frozenset()) -> None:
        self.base = base
        self.account = account
        self.peers = peers  # the riders with phones: a phone driver takes only their requests
        self.view: dict[str, dict[str, Any]] = {}  # trip id -> the newest copy applied
        self.regressions: list[str] = []
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.done: asyncio.Queue[int] = asyncio.Queue()
        self.drops = self.resumes = 0

    async def arrive(self) -> None:
        """Connect, then resume with what the view holds; return once ``resume.done`` came."""
        self.ws = await websockets.connect(
            f"{self.base}/taxi/?token={self.account.access}", subprotocols=["taxi.v2"], open_timeout=TIMEOUT
        )
        self.done = asyncio.Queue()
        self.reader = asyncio.create_task(self._read(self.ws))
        await self.resume()

    async def resume(self) -> None:
        held = {trip_id: trip["version"] for trip_id, trip in self.view.items()}
        await self.ws.send(json.dumps({"type": "resume", "data": {"trips": held}}))
        await asyncio.wait_for(self.done.get(), TIMEOUT)
        self.resumes += 1

    async def _read(self, ws: Any) -> None:
        try:
            async for raw in ws:
                self._apply(json.loads(raw))
        except websockets.ConnectionClosed:
            pass

    def _apply(self, message: dict[str, Any]) -> None:
        kind, data = message.get("type"), message.get("data")
        if kind == "echo.message" and isinstance(data, dict) and "version" in data:
            held = self.view.get(data["id"])
            if held is not None and data["version"] <= held["version"]:
                self.regressions.append(
                    f"{self.account.username}: {data['id']} v{data['version']} after v{held['version']}"
                )
            else:
                self.view[data["id"]] = data
        elif kind == "resume.done":
            self.done.put_nowait(int(data["sent"]))
        elif kind == "resume.required":
            asyncio.get_running_loop().create_task(self.resume())

    async def drop(self) -> None:
        """The socket goes away without a closing handshake (a lift, a tunnel)."""
        self.drops += 1
        self.ws.transport.abort()
        if self.reader is not None:
            await asyncio.gather(self.reader, return_exceptions=True)
        self.ws = self.reader = None

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            if self.reader is not None:
                await asyncio.gather(self.reader, return_exceptions=True)

    async def send(self, kind: str, data: dict[str, Any]) -> None:
        if self.ws is not None:
            try:
                await self.ws.send(json.dumps({"type": kind, "data": data}))
            except websockets.ConnectionClosed:
                pass  # dropped meanwhile: it resumes when it comes back

    def act(self) -> tuple[str, dict[str, Any]] | None:
        """What this user does next with what it holds (None: nothing to do)."""
        me, trips = self.account.id, list(self.view.values())
        if self.account.group == "rider":
            mine = [t for t in trips if (t["rider"] or {}).get("id") == me and t["status"] in OPEN]
            if not mine:
                return "create.trip", {"pick_up_address": "A", "drop_off_address": "B", "request_id": str(uuid.uuid4())}
            if mine[0]["status"] != "IN_PROGRESS" and random.random() < 0.2:
                return "cancel.trip", {"id": mine[0]["id"], "reason": "soak"}
            return None
        driving = [
            t for t in trips if (t["driver"] or {}).get("id") == me and t["status"] in ("STARTED", "IN_PROGRESS")
        ]
        if driving:
            trip = driving[0]
            if trip["status"] == "STARTED" and random.random() < 0.1:
                return "cancel.trip", {"id": trip["id"]}
            return "update.trip", {"id": trip["id"], "status": NEXT[trip["status"]]}
        # Only the phones' riders' requests: the pairs' trips are their own drivers' (the soak checks them).
        requests = [t for t in trips if t["status"] == "REQUESTED" and (t["rider"] or {}).get("id") in self.peers]
        return ("update.trip", {"id": random.choice(requests)["id"], "status": "STARTED"}) if requests else None

    def mismatches(self, stored: Stored, *, connected: bool) -> list[str]:
        """After the final resume: trips held at another version than stored, open trips of this user not held.
        ``connected`` (before it): only what live events must have brought, the trips of this user and the
        requests it holds."""
        me, found = self.account.id, []
        for trip_id, trip in self.view.items():
            status, version, rider, driver = stored[trip_id]
            # A request it holds must not have moved on unseen (one handed back while this driver was busy is a
            # request still, sent to the drivers free at the time).
            owed = not connected or me in (rider, driver) or (trip["status"] == "REQUESTED" and status != "REQUESTED")
            if owed and version != trip["version"]:
                found.append(f"{self.account.username}: {trip_id} held v{trip['version']}, stored v{version}")
        for trip_id, (status, version, rider, driver) in stored.items():
            if status in OPEN and me in (rider, driver) and trip_id not in self.view:
                found.append(f"{self.account.username}: {trip_id} ({status} v{version}) not held")
        return found


NEXT = {"STARTED": "IN_PROGRESS", "IN_PROGRESS": "COMPLETED"}


class Phones:
    def __init__(self, base: str, accounts: list[Account], drop_every: float, stored: Callable[[], Awaitable[Stored]]):
        riders = frozenset(a.id for a in accounts if a.group == "rider")
        self.phones = [Phone(base.replace("http", "ws", 1), a, riders) for a in accounts]
        self.drop_every = drop_every
        self.stored = stored  # the trips of this run as the database has them
        self.problems: list[str] = []

    async def start(self) -> None:
        await asyncio.gather(*(p.arrive() for p in self.phones))

    async def run(self, until: float, think: float) -> None:
        """Until ``until`` (loop time): every phone acts every ``think`` s on average, and a random connected phone
        is dropped every ``drop_every`` s on average."""
        actors = [asyncio.create_task(self._act(p, until, think)) for p in self.phones]
        await self._drop(until)
        await asyncio.gather(*actors, return_exceptions=True)

    async def _act(self, phone: Phone, until: float, think: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            await asyncio.sleep(random.expovariate(1 / think) if think else 0)
            step = phone.act()
            if step is not None:
                await phone.send(*step)

    async def _drop(self, until: float) -> None:
        loop = asyncio.get_running_loop()
        back: set[asyncio.Task[None]] = set()
        while loop.time() < until:
            await asyncio.sleep(random.expovariate(1 / self.drop_every))
            up = [p for p in self.phones if p.ws is not None]
            if up:
                phone = random.choice(up)
                await phone.drop()
                task = loop.create_task(self._come_back(phone))
                back.add(task)
                task.add_done_callback(back.discard)
        await asyncio.gather(*back, return_exceptions=True)

    async def _come_back(self, phone: Phone) -> None:
        await asyncio.sleep(random.uniform(0.1, 2.0))
        try:
            await phone.arrive()
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            self.problems.append(f"{phone.account.username} could not come back: {exc!r}")

    async def verdict(self) -> dict[str, Any]:
        """After the load (and its broadcasts) stopped: the three counts, and examples of each."""
        stored = await self.stored()
        lost = [m for p in self.phones if p.ws is not None for m in p.mismatches(stored, connected=True)]
        for phone in self.phones:
            try:
                await (phone.resume() if phone.ws is not None else phone.arrive())
            except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                self.problems.append(f"{phone.account.username}: the last resume failed: {exc!r}")
        stored = await self.stored()
        stale = [m for p in self.phones for m in p.mismatches(stored, connected=False)]
        regressions = [r for p in self.phones for r in p.regressions]
        await asyncio.gather(*(p.close() for p in self.phones), return_exceptions=True)
        return {
            "phones": len(self.phones),
            "drops": sum(p.drops for p in self.phones),
            "resumes": sum(p.resumes for p in self.phones),
            "lost_events": lost,
            "stale_views": stale,
            "version_regressions": regressions,
            "problems": self.problems,
        }


def stored_trips(dsn: str) -> Stored:
    """Every trip as stored: id -> (status, version, rider, driver)."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, status, version, rider_id, driver_id FROM taxi_trip")
            rows = cur.fetchall()
    finally:
        conn.close()
    return {str(uuid.UUID(str(r[0]))): (r[1], r[2], r[3], r[4]) for r in rows}
