"""The resume guarantee, checked by a stateful test on a real server with two workers (PostgreSQL and Redis).

Riders and drivers on protocol version 2 connect, drop their sockets and come back at random moments while trips
are requested, accepted, cancelled, handed back and completed, and the server's Redis restarts now and then (its
workers then tell every version 2 socket ``resume.required``, which the phones answer with ``resume``). Each phone keeps what a client would: per trip,
the copy with the highest version it has applied. After every step:

- no phone ever received an older or equal version of a trip after a newer one (its reader checks each frame);
- every connected phone's view of the trips it is party to equals the database's, and a request it holds is
  current (live events reach it);
- right after a reconnect and its ``resume``, every trip the phone lists is current, and it holds every open trip
  of its user and, for a driver who is free, every open request.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import websockets
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

from taxiload.harness import PrivateRedis, ServerProcess
from tests.processes.test_realtime_processes import account, env_for
from tests.support import SyncDB, eventually
from tests.wsclient import WAIT, connect, send, trip_request

RIDERS, DRIVERS = 2, 3
OPEN = ("REQUESTED", "STARTED", "IN_PROGRESS")


class Phone:
    """One user's app: a socket (or none, while away) and the newest copy of each trip it has seen."""

    def __init__(self, user: dict, role: str) -> None:
        self.user = user
        self.role = role
        self.view: dict[str, dict] = {}
        self.regressions: list[str] = []
        self.ws = None
        self.reader: asyncio.Task | None = None
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.done: asyncio.Queue[int] = asyncio.Queue()
        self.barriers = 0
        self.resyncs: set[asyncio.Task] = set()

    async def open(self, ws_url: str) -> None:
        self.ws = await connect(ws_url, self.user["access"], ready=False, protocol=2)
        self.inbox, self.done = asyncio.Queue(), asyncio.Queue()
        self.reader = asyncio.create_task(self._read(self.ws))
        await self.barrier()  # answered: the socket is in its groups (a resume.required may come before it)

    async def _read(self, ws) -> None:
        async for raw in ws:
            message = json.loads(raw)
            data = message["data"]
            if message["type"] == "echo.message" and isinstance(data, dict) and "version" in data:
                old = self.view.get(data["id"])
                if old is not None and data["version"] <= old["version"]:
                    self.regressions.append(f"{data['id']}: version {data['version']} after {old['version']}")
                else:
                    self.view[data["id"]] = data
            elif message["type"] == "resume.done":
                self.done.put_nowait(data["sent"])
            elif message["type"] == "resume.required":  # the server's Redis came back: catch up
                task = asyncio.create_task(self.resume())
                self.resyncs.add(task)
                task.add_done_callback(self.resyncs.discard)
            else:
                self.inbox.put_nowait(message)

    async def drop(self) -> None:
        """The socket goes away without a goodbye (a lift, a tunnel)."""
        self.ws.transport.abort()
        await asyncio.gather(self.reader, return_exceptions=True)
        self.ws = self.reader = None

    async def command(self, kind: str, data: dict) -> None:
        """Send a message, then wait until its answer was applied: messages of one socket are answered in order,
        so once an echo sent after it comes back, the answer (a trip, or an error) is in."""
        await send(self.ws, kind, data)
        await self.barrier()

    async def barrier(self) -> None:
        self.barriers += 1
        mark = {"barrier": self.barriers}
        await send(self.ws, "echo.message", mark)
        while (await asyncio.wait_for(self.inbox.get(), WAIT)) != {"type": "echo.message", "data": mark}:
            pass

    async def resume(self) -> int:
        await send(self.ws, "resume", {"trips": {tid: t["version"] for tid, t in self.view.items()}})
        return int(await asyncio.wait_for(self.done.get(), WAIT))


class Sessions(RuleBasedStateMachine):
    def __init__(self, server: ServerProcess, sql: SyncDB, users: dict, redis: PrivateRedis) -> None:
        super().__init__()
        self.server = server
        self.redis = redis
        self.sql = sql
        self.loop = asyncio.new_event_loop()
        self.riders = [Phone(u, "rider") for u in users["riders"]]
        self.drivers = [Phone(u, "driver") for u in users["drivers"]]
        self.since = datetime.now(UTC)

    def run(self, coro):
        return self.loop.run_until_complete(asyncio.wait_for(coro, 60))

    @initialize()
    def everyone_connects(self) -> None:
        # Each example starts from the same state: no trip of an earlier example is still open.
        self.sql.execute("UPDATE taxi_trip SET status = 'CANCELED', version = version + 1 WHERE status <> 'COMPLETED'")
        for phone in self.riders + self.drivers:
            self.run(self._arrive(phone))

    # -- the database, as the truth ------------------------------------------------------------------------------

    def stored(self, trip_ids=None) -> dict[str, tuple[str, int, int | None, int | None]]:
        rows = self.sql.fetch("SELECT id, status, version, rider_id, driver_id FROM taxi_trip")
        found = {str(uuid.UUID(str(r[0]))): (r[1], r[2], r[3], r[4]) for r in rows}
        return found if trip_ids is None else {t: found[t] for t in trip_ids if t in found}

    def party(self, phone: Phone) -> set[str]:
        column = "rider_id" if phone.role == "rider" else "driver_id"
        rows = self.sql.fetch(f"SELECT id, created FROM taxi_trip WHERE {column} = %s", (phone.user["id"],))
        return {str(uuid.UUID(str(r[0]))) for r in rows if _utc(r[1]) >= self.since}

    # -- what phones do --------------------------------------------------------------------------------------------

    async def _arrive(self, phone: Phone) -> None:
        # Right after a Redis restart a socket may be refused (1013) until the worker is subscribed again: retry,
        # as a phone does.
        async def opened() -> bool:
            await phone.open(self.server.ws_url)
            return True

        await eventually(
            opened,
            f"{phone.user['username']} connects",
            timeout=WAIT,
            interval=0.2,
            retry_on=(websockets.exceptions.ConnectionClosed, websockets.exceptions.InvalidStatus, OSError),
        )
        await phone.resume()
        db = self.stored()  # id -> (status, version, rider, driver)
        stale = {t: (v["version"], db[t][1]) for t, v in phone.view.items() if v["version"] != db[t][1]}
        assert not stale, f"{phone.user['username']} after resume: (has, stored) {stale}"
        me, column = phone.user["id"], 2 if phone.role == "rider" else 3
        expected = {t for t, row in db.items() if row[0] in OPEN and row[column] == me}
        busy = any(row[0] in ("STARTED", "IN_PROGRESS") and row[3] == me for row in db.values())
        if phone.role == "driver" and not busy:
            expected |= {t for t, row in db.items() if row[0] == "REQUESTED"}
        assert expected <= set(phone.view), f"{phone.user['username']} lacks {expected - set(phone.view)}"

    def connected(self, phones: list[Phone]) -> list[Phone]:
        return [p for p in phones if p.ws is not None]

    @rule(who=st.sampled_from(range(RIDERS + DRIVERS)))
    def drop_and_come_back(self, who: int) -> None:
        phone = (self.riders + self.drivers)[who]
        if phone.ws is not None:
            self.run(phone.drop())
        else:
            self.run(self._arrive(phone))
        self.check()

    @rule()
    def redis_restarts(self) -> None:
        # No check here: the next step acts at once, while a worker may still be resubscribing (what it publishes
        # then never reaches that worker's sockets, which are told to resume).
        self.redis.stop()
        self.redis.start()

    @rule(who=st.sampled_from(range(RIDERS)))
    def rider_requests(self, who: int) -> None:
        phone = self.riders[who]
        if phone.ws is not None:
            self.run(phone.command("create.trip", trip_request(request_id=str(uuid.uuid4()))))
        self.check()

    @rule(who=st.sampled_from(range(RIDERS)), conditional=st.booleans())
    def rider_cancels(self, who: int, conditional: bool) -> None:
        phone = self.riders[who]
        trips = [t for t in phone.view.values() if t["status"] in ("REQUESTED", "STARTED")]
        if phone.ws is not None and trips:
            data = {"id": trips[0]["id"], "reason": "model"} | ({"version": trips[0]["version"]} if conditional else {})
            self.run(phone.command("cancel.trip", data))
        self.check()

    @rule(who=st.sampled_from(range(DRIVERS)), pick=st.integers(0, 5))
    def driver_accepts(self, who: int, pick: int) -> None:
        phone = self.drivers[who]
        requests = sorted(t["id"] for t in phone.view.values() if t["status"] == "REQUESTED")
        if phone.ws is not None and requests:
            self.run(phone.command("update.trip", {"id": requests[pick % len(requests)], "status": "STARTED"}))
        self.check()

    @rule(who=st.sampled_from(range(DRIVERS)), hand_back=st.booleans())
    def driver_moves_on(self, who: int, hand_back: bool) -> None:
        phone = self.drivers[who]
        mine = [t for t in phone.view.values() if (t["driver"] or {}).get("id") == phone.user["id"]]
        driving = [t for t in mine if t["status"] in ("STARTED", "IN_PROGRESS")]
        if phone.ws is not None and driving:
            trip = driving[0]
            if hand_back and trip["status"] == "STARTED":
                self.run(phone.command("cancel.trip", {"id": trip["id"]}))
            else:
                following = {"STARTED": "IN_PROGRESS", "IN_PROGRESS": "COMPLETED"}[trip["status"]]
                self.run(phone.command("update.trip", {"id": trip["id"], "status": following}))
        self.check()

    # -- the guarantee after every step ----------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            self.run(self._leave())
        finally:
            self.loop.close()

    async def _leave(self) -> None:
        """Close every socket and end every task of the example, so nothing is left pending on a closed loop."""
        for phone in self.riders + self.drivers:
            for task in list(phone.resyncs):
                task.cancel()
            await asyncio.gather(*phone.resyncs, return_exceptions=True)
            if phone.ws is not None:
                await phone.ws.close()
            if phone.reader is not None:
                await asyncio.gather(phone.reader, return_exceptions=True)

    def check(self) -> None:
        for phone in self.riders + self.drivers:
            assert not phone.regressions, f"{phone.user['username']} went back: {phone.regressions}"
        self.run(eventually(self._views_current, "every connected phone's view is current", timeout=WAIT))

    async def _views_current(self) -> bool:
        db = self.stored()
        for phone in self.connected(self.riders + self.drivers):
            for trip_id in self.party(phone):
                if trip_id not in phone.view or phone.view[trip_id]["version"] != db[trip_id][1]:
                    return False
            for trip_id, trip in phone.view.items():
                if trip["version"] > db[trip_id][1]:
                    raise AssertionError(f"{phone.user['username']} holds a version of {trip_id} never stored")
                # A request it holds must not have moved on unseen (a request handed back again while this driver
                # was busy went to the drivers free at the time: still a request, at a later version).
                if trip["status"] == "REQUESTED" and db[trip_id][0] != "REQUESTED":
                    return False
        return True


def _utc(value) -> datetime:
    stamp = datetime.fromisoformat(value) if isinstance(value, str) else value
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def test_after_any_pattern_of_disconnects_each_view_equals_the_servers(pg_database_url, tmp_path, private_redis):
    # The open-trip limit at its default; the message rate lifted (a step sends a command and an echo at once).
    env = env_for(pg_database_url, tmp_path, redis_url=private_redis.url) | {
        "TAXI_MAX_OPEN_TRIPS_PER_RIDER": "1",
        "TAXI_WS_MESSAGES_PER_S": "1000",
    }
    with ServerProcess(env, workers=2) as server:
        users = {
            "riders": [account(server.url, f"rider{n}@example.com", "rider") for n in range(RIDERS)],
            "drivers": [account(server.url, f"driver{n}@example.com", "driver") for n in range(DRIVERS)],
        }
        sql = SyncDB(pg_database_url)
        run_state_machine_as_test(
            lambda: Sessions(server, sql, users, private_redis),
            settings=settings(
                max_examples=10,
                stateful_step_count=40,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            ),
        )
        assert "Traceback" not in server.output()
