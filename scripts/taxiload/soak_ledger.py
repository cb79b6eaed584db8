"""The soak's bookkeeping: trips and their acknowledged and known states, acknowledgements, faults and their
recovery, counters and problems, fed by the clients' hooks and by the HTTP reads it makes for the pairs."""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING, Any

import httpx

from taxiload.soak_model import ORDER, RETRY_DELAY, SETTLE, Ack, Fault, Life, Pair, Trip, mono

if TYPE_CHECKING:
    from taxiload.soak_client import Client


class Ledger:
    """What happened during a soak, and the hooks through which the clients and pairs report it."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.ws_base = base.replace("http://", "ws://")
        self.closing = False
        self.trips: dict[str, Trip] = {}
        self.acks: list[Ack] = []
        self.faults: list[Fault] = []
        self.counts: collections.Counter[str] = collections.Counter()
        self.problems: list[str] = []
        self.t0 = self.load_start = self.stop_at = self.load_end = mono()
        self.http: httpx.AsyncClient | None = None
        self.not_notified: set[tuple[str, str]] = set()  # changes whose sender was told the broadcast failed

    def rel(self, t: float) -> str:
        return f"{t - self.t0:.1f} s"

    def problem(self, text: str) -> None:
        self.problems.append(f"[{self.rel(mono())}] {text}")

    def count(self, what: str, n: int = 1) -> None:
        self.counts[what] += n

    def open_fault(self, kind: str) -> Fault | None:
        for fault in self.faults:
            if fault.kind == kind and fault.back is not None and fault.recovered is None:
                return fault
        return None

    def on_broadcast(self, client: Client, now: float) -> None:
        # Redis recovery: the first broadcast any socket hears after Redis is back (nothing can be published while it
        # is down, so whatever arrives after `back` went through the restarted Redis).
        for fault in self.faults:
            if fault.kind == "redis" and fault.back is not None and fault.back <= now < fault.back + 30:
                if fault.recovered is None:
                    fault.recovered = now
                if client.driver:  # drivers hear every create.trip: when each of them hears again
                    fault.first_heard.setdefault(client.label, now)

    def db_ok(self, sent: float) -> None:
        # PostgreSQL recovery: the first operation sent after PostgreSQL is back that succeeded.
        if (fault := self.open_fault("postgres")) is not None and sent >= fault.back:  # type: ignore[operator]
            fault.recovered = mono()

    def on_close(self, client: Client, life: Life) -> None:
        if self.closing:
            return
        self.count(f"socket closed by the server or the network ({life.code})")
        fault = self.open_fault("worker")
        if fault is not None and life.closed is not None and life.closed >= fault.begin:
            fault.dropped += 1

    def on_reconnect(self, client: Client, life: Life) -> None:
        self.count("reconnects")
        # Worker recovery: the first socket the killed worker dropped that is open and answering again.
        fault = self.open_fault("worker")
        if fault is not None and len(client.lives) > 1:
            before = client.lives[-2]
            if before.closed is not None and before.closed >= fault.begin:
                fault.recovered = life.ready

    def ack(self, trip: Trip, status: str, sent: float, pair: Pair, driver: int | None) -> None:
        self.acks.append(Ack(trip.id, status, sent, mono(), pair.idx, driver))
        self.db_ok(sent)
        if trip.acked is not None and ORDER[status] <= ORDER[trip.acked]:
            self.problem(f"trip {trip.id}: {status} acknowledged after {trip.acked}")
        trip.acked = status
        self.observe(trip, status, None)

    def observe(self, trip: Trip, status: str, before: str | None) -> None:
        """``status`` is committed (an acknowledgement, or an HTTP read sent when ``before`` was the latest known)."""
        if before is not None and ORDER[status] < ORDER[before]:
            self.problem(f"trip {trip.id}: read {status} over HTTP after {before} had been committed")
        if trip.known is None or ORDER[status] > ORDER[trip.known]:
            trip.known = status
        trip.pending = {s for s in trip.pending if ORDER[s] > ORDER[trip.known]}

    # --- HTTP ---

    async def get(self, client: Client, path: str) -> tuple[int | None, Any]:
        assert self.http is not None
        sent = mono()
        try:
            resp = await self.http.get(path, headers={"Authorization": f"Bearer {client.account.access}"})
        except httpx.HTTPError as exc:
            self.count(f"HTTP GET failed ({type(exc).__name__})")
            return None, None
        if resp.status_code == 200:
            self.db_ok(sent)  # the Bearer check reads the user: a 200 went through PostgreSQL
            return 200, resp.json()
        self.count(f"HTTP GET {resp.status_code}")
        return resp.status_code, resp.text

    async def get_retrying(self, client: Client, path: str) -> tuple[int | None, Any]:
        """GET until a 200 or 404 (503 while PostgreSQL is down, connection errors while a worker dies), bounded."""
        until, delay = self.stop_at + SETTLE, RETRY_DELAY
        while True:
            status, body = await self.get(client, path)
            if status in (200, 404) or mono() + delay > until:
                return status, body
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
