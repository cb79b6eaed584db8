"""What the city scenario's processes run: driver sockets that send fixes, hear requests, accept the ones chosen for
them and drive (in the client processes), and the riders that request trips at a fixed rate (in the main process).

Times cross processes as ``time.time_ns`` (one clock on one machine): a request carries its send time in its
address, a fix carries its send time in ``speed`` (milliseconds within a 1,000 s cycle, as m/s), and a trip
event is timed from the ``updated`` the server wrote.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import math
import random
import time
from array import array
from collections.abc import Callable
from typing import Any

import orjson

from taxiload.proc import cpu_seconds
from taxiload.ws_client import Conn, close_all, open_many

ORIGIN = (52.40, 13.20)  # the south-west corner of the city
CITY_M = 30_000.0
HEARTBEAT_S = 4.0  # an idle driver's fix interval: 10,000 drivers send 2,500 fixes/s
DRIVE_STEPS = 8  # fixes (one a second) between acceptance and completion
CYCLE_MS = 1_000_000


def home(idx: int, seed: int) -> tuple[float, float]:
    """Where driver ``idx`` waits: uniform over the 30 x 30 km square."""
    rng = random.Random(seed * 1_000_003 + idx)
    dx, dy = rng.uniform(0, CITY_M), rng.uniform(0, CITY_M)
    return ORIGIN[0] + dy / 111_320.0, ORIGIN[1] + dx / (111_320.0 * math.cos(math.radians(ORIGIN[0])))


def offset(point: tuple[float, float], north_m: float) -> tuple[float, float]:
    return point[0] + north_m / 111_320.0, point[1]


def stamp_speed() -> float:
    """The send time as a speed: milliseconds within the cycle, in thousands (m/s within [0, 1000))."""
    return (time.time_ns() // 1_000_000 % CYCLE_MS) / 1000.0


def speed_age_us(speed: float) -> int:
    """How long ago a fix stamped by ``stamp_speed`` was sent, in microseconds."""
    now_ms = time.time_ns() / 1e6 % CYCLE_MS
    return int(((now_ms - speed * 1000.0) % CYCLE_MS) * 1000)


def due(elapsed: float, tick: float, interval: float, count: int) -> range:
    """The fixes due in the tick that ends ``elapsed`` s after the start, when socket k of ``count`` sends at
    (k / count + m) x ``interval``: their k + m x count (take it modulo ``count``)."""
    return range(max(int((elapsed - tick) / interval * count), 0), int(elapsed / interval * count))


def fix_frame(point: tuple[float, float], speed: float | None = None) -> bytes:
    data: dict[str, Any] = {"lat": point[0], "lng": point[1]}
    if speed is not None:
        data["speed"] = speed
    return orjson.dumps({"type": "update.location", "data": data})


class CityDrivers:
    """This client process's driver sockets (mixed into the client process's command set)."""

    async def city_open(self, arg: dict[str, Any]) -> dict[str, Any]:
        """Open driver sockets: arg = {drivers: [(idx, url)], concurrency, seed}."""
        self.city_seed = arg["seed"]
        self.city_conns: dict[int, Conn] = {}
        self.city_reached = array("q")  # pairs: request seq, driver idx
        self.city_latency = array("q")  # request send -> receipt, us
        self.city_errors: collections.Counter[str] = collections.Counter()
        self.city_driving: set[asyncio.Task[None]] = set()
        self.city_at_wheel: set[int] = set()  # drivers driving a trip: their fixes come from ``_drive``
        failures: collections.Counter[str] = collections.Counter()
        gate = asyncio.Semaphore(arg["concurrency"])

        async def one(idx: int, url: str) -> None:
            async with gate:
                conn = Conn(lambda _c, _p: None)
                conn.handler = self._city_handler(idx, conn)
                try:
                    await conn.open(url)
                except Exception as exc:
                    failures[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
                    if conn.transport is not None or conn.ws is not None:
                        conn.abort()
                    return
                self.city_conns[idx] = conn

        await asyncio.gather(*(one(idx, url) for idx, url in arg["drivers"]))
        return {"indexes": list(self.city_conns), "failures": dict(failures)}

    def _city_handler(self, idx: int, conn: Conn) -> Any:
        def on_frame(_: Conn, payload: bytes) -> None:
            message = orjson.loads(payload)
            data = message.get("data")
            if message.get("type") == "error":
                self.city_errors[str(data.get("code"))] += 1
                return
            if not isinstance(data, dict) or not str(data.get("pick_up_address", "")).startswith("city:"):
                return
            _, sent, seq, chosen = data["pick_up_address"].split(":")
            if data["status"] == "REQUESTED":
                self.city_latency.append((time.time_ns() - int(sent)) // 1000)
                self.city_reached.extend((int(seq), idx))
                if int(chosen) == idx:
                    conn.send(orjson.dumps({"type": "update.trip", "data": {"id": data["id"], "status": "STARTED"}}))
            elif data["status"] == "STARTED" and int(chosen) == idx and (data.get("driver") or {}).get("id"):
                task = asyncio.get_running_loop().create_task(self._drive(idx, conn, data["id"]))
                self.city_driving.add(task)
                task.add_done_callback(self.city_driving.discard)

        return on_frame

    async def _drive(self, idx: int, conn: Conn, trip_id: str) -> None:
        """A fix a second along the trip, and no heartbeat from home meanwhile: a phone sends where it is, and a
        heartbeat between two fixes would both move the car home and hold the next fix back for the rest of the
        server's fix interval (measured as fix -> rider latency that no real driver causes)."""
        start = home(idx, self.city_seed)
        self.city_at_wheel.add(idx)
        try:
            for step in range(1, DRIVE_STEPS + 1):
                await asyncio.sleep(1.0)
                conn.send(fix_frame(offset(start, 150.0 * min(step, DRIVE_STEPS - step)), stamp_speed()))
                if step == DRIVE_STEPS // 2:
                    conn.send(orjson.dumps({"type": "update.trip", "data": {"id": trip_id, "status": "IN_PROGRESS"}}))
            conn.send(orjson.dumps({"type": "update.trip", "data": {"id": trip_id, "status": "COMPLETED"}}))
            conn.send(fix_frame(start))
        finally:
            self.city_at_wheel.discard(idx)

    async def city_run(self, arg: dict[str, Any]) -> dict[str, Any]:
        """Heartbeats from every driver at home until ``deadline_ns``; requests are handled as they come."""
        loop = asyncio.get_running_loop()
        self.city_reached, self.city_latency, self.city_errors = array("q"), array("q"), collections.Counter()
        cpu0: float | None = None
        await asyncio.sleep(max(0.0, (arg["start_ns"] - time.time_ns()) / 1e9))
        end = loop.time() + (arg["deadline_ns"] - time.time_ns()) / 1e9
        conns = list(self.city_conns.items())
        frames = {idx: fix_frame(home(idx, self.city_seed)) for idx, _ in conns}
        fixes, tick, t0 = 0, 0.05, loop.time()
        while loop.time() < end:
            if cpu0 is None and time.time_ns() >= arg["measure_ns"]:
                cpu0 = cpu_seconds()
            for k in due(loop.time() - t0, tick, HEARTBEAT_S, len(conns)):
                idx, conn = conns[k % len(conns)]
                if not conn.closed and idx not in self.city_at_wheel:
                    conn.send(frames[idx])
                    fixes += 1
            await asyncio.sleep(tick)
        cpu_s = cpu_seconds() - (cpu0 if cpu0 is not None else cpu_seconds())  # the seconds of requests only
        if self.city_driving:
            await asyncio.wait(list(self.city_driving), timeout=DRIVE_STEPS + 5)
        return {
            "fixes": fixes,
            "reached": self.city_reached.tobytes(),
            "latency_us": self.city_latency.tobytes(),
            "errors": dict(self.city_errors),
            "closed": sum(c.closed for c in self.city_conns.values()),
            "cpu_s": cpu_s,
        }

    async def city_close(self, arg: Any) -> dict[str, Any]:
        aborted = await close_all(list(self.city_conns.values()))
        self.city_conns = {}
        return {"aborted": aborted}


def updated_age_us(updated: str) -> int:
    """Microseconds since the server wrote a trip change (its ``updated``, ISO 8601 UTC)."""
    then = dt.datetime.fromisoformat(updated.replace("Z", "+00:00")).timestamp()
    return int((time.time() - then) * 1e6)


class CityRiders:
    """Riders requesting trips at a fixed rate, each at a chosen idle driver's home (the main process)."""

    def __init__(self, seed: int, drivers: list[int], located: bool) -> None:
        self.seed, self.drivers, self.located = seed, drivers, located
        self.busy: dict[int, float] = {}  # driver idx -> since (monotonic)
        self.requests: list[tuple[int, tuple[float, float], frozenset[int], float]] = []  # seq, pick-up, busy, t
        self.transitions: dict[int, list[float]] = collections.defaultdict(list)
        self.trips: dict[str, int] = {}  # trip id -> chosen driver
        self.echo_us, self.event_us, self.fix_us = array("q"), array("q"), array("q")
        self.errors: collections.Counter[str] = collections.Counter()

    def handler(self, conn: Conn, payload: bytes) -> None:
        message = orjson.loads(payload)
        kind, data = message.get("type"), message.get("data")
        if kind == "driver.location":
            if data.get("speed") is not None:
                self.fix_us.append(speed_age_us(data["speed"]))
            return
        if kind == "error":
            self.errors[str(data.get("code"))] += 1
            return
        if not isinstance(data, dict) or not str(data.get("pick_up_address", "")).startswith("city:"):
            return
        _, sent, _, chosen = data["pick_up_address"].split(":")
        if data["status"] == "REQUESTED":
            self.echo_us.append((time.time_ns() - int(sent)) // 1000)
            return
        self.event_us.append(updated_age_us(data["updated"]))
        if data["status"] == "COMPLETED":
            self.free(int(chosen))

    def free(self, idx: int) -> None:
        if self.busy.pop(idx, None) is not None:
            self.transitions[idx].append(time.monotonic())

    async def run(
        self, ws: str, tokens: list[str], duration: float, rate: float, requests_done: Callable[[], None]
    ) -> None:
        """Request for ``duration`` seconds, call ``requests_done``, then wait for the last trips to finish."""
        conns = (await open_many([f"{ws}?token={t}&protocol=2" for t in tokens], 50, self.handler))["conns"]
        loop, rng = asyncio.get_running_loop(), random.Random(self.seed)
        start, seq = loop.time(), 0
        while (due := start + seq / rate) < start + duration:
            await asyncio.sleep(max(0.0, due - loop.time()))
            for idx, since in list(self.busy.items()):
                if time.monotonic() - since > 60:  # its completion never came: count it free again
                    self.free(idx)
            chosen = rng.choice(self.drivers)
            while chosen in self.busy:
                chosen = rng.choice(self.drivers)
            now = time.monotonic()
            pick_up = offset(home(chosen, self.seed), 50.0)
            self.requests.append((seq, pick_up, frozenset(self.busy), now))
            self.busy[chosen] = now
            self.transitions[chosen].append(now)
            data: dict[str, Any] = {"pick_up_address": f"city:{time.time_ns()}:{seq}:{chosen}", "drop_off_address": "B"}
            if self.located:
                data["pick_up_location"] = {"lat": pick_up[0], "lng": pick_up[1]}
            conns[seq % len(conns)].send(orjson.dumps({"type": "create.trip", "data": data}))
            seq += 1
        requests_done()
        await asyncio.sleep(DRIVE_STEPS + 3)  # the last trips finish
        await close_all(conns)
