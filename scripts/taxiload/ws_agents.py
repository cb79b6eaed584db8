"""What bench_ws's client processes run: the driver sockets' receipt of bench trips (Deliveries), the rider/driver
pairs of the lifecycle scenario, and the riders that create the broadcast scenario's trips on a fixed schedule."""

from __future__ import annotations

import asyncio
import collections
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

import orjson

from taxiload.accounts import Account
from taxiload.ws_client import BENCH_KEY, ERROR_PREFIX, Conn, Handler, close_all, error_code, open_many, trip_frame

NEXT_STATUS = {"REQUESTED": "STARTED", "STARTED": "IN_PROGRESS", "IN_PROGRESS": "COMPLETED", "COMPLETED": None}


class Deliveries:
    """What the bench-trip frames of this process's driver sockets tell: count and send-to-receipt latency."""

    __slots__ = ("errors", "last_ns", "latency_us", "others")

    def __init__(self) -> None:
        self.latency_us = array("q")
        self.last_ns = 0
        self.others = 0
        self.errors: collections.Counter[str] = collections.Counter()

    def handler(self) -> Handler:
        append, key, offset, clock = self.latency_us.append, BENCH_KEY, len(BENCH_KEY), time.time_ns

        def on_frame(conn: Conn, payload: bytes) -> None:
            i = payload.find(key)
            if i < 0:
                if payload.startswith(ERROR_PREFIX):
                    self.errors[error_code(payload)] += 1
                else:
                    self.others += 1  # e.g. a STARTED notification: not a bench delivery
                return
            now = clock()
            append((now - int(payload[i + offset : payload.index(b":", i + offset)])) // 1000)
            conn.count += 1
            self.last_ns = now

        return on_frame


class Pair:
    """One rider and its own driver, looping create -> STARTED -> IN_PROGRESS -> COMPLETED."""

    def __init__(self, idx: int, rider_id: int, driver_id: int, stats: LifecycleStats) -> None:
        self.idx, self.rider_id, self.driver_id, self.stats = idx, rider_id, driver_id, stats
        self.marker = f'"pick_up_address":"lc:{idx}:'.encode()
        self.address = ""
        self.sent: dict[str, int] = {}
        self.done: asyncio.Future[None] | None = None
        self.rider: Conn | None = None
        self.driver: Conn | None = None

    def fail(self, who: str, payload: bytes) -> None:
        self.stats.errors[f"{who}: {error_code(payload)}"] += 1
        if self.done is not None and not self.done.done():
            self.done.set_exception(RuntimeError("error frame"))

    def on_rider(self, conn: Conn, payload: bytes) -> None:
        now = time.perf_counter_ns()
        if payload.startswith(ERROR_PREFIX):
            self.fail("rider", payload)
            return
        data = orjson.loads(payload).get("data") or {}
        if not isinstance(data, dict) or data.get("pick_up_address") != self.address:
            return  # a late frame of an earlier (stalled) trip
        status = data.get("status")
        if status == "REQUESTED":
            self.stats.echo_us.append((now - self.sent["create"]) // 1000)
        elif (sent := self.sent.get(str(status))) is not None:
            self.stats.rider_us.append((now - sent) // 1000)
            if status == "COMPLETED" and self.done is not None and not self.done.done():
                self.done.set_result(None)

    def on_driver(self, conn: Conn, payload: bytes) -> None:
        self.stats.driver_frames += 1
        if self.marker not in payload:  # every other pair's request and STARTED notice: real load, ignored
            if payload.startswith(ERROR_PREFIX):
                self.fail("driver", payload)
            return
        now = time.perf_counter_ns()
        data = orjson.loads(payload).get("data") or {}
        if data.get("pick_up_address") != self.address or (data.get("rider") or {}).get("id") != self.rider_id:
            return
        status = data.get("status")
        if status == "REQUESTED":
            if "STARTED" in self.sent:
                return
        elif (sent := self.sent.get(str(status))) is not None:
            self.stats.reply_us.append((now - sent) // 1000)
        following = NEXT_STATUS.get(str(status))
        if following is None:
            return
        self.sent[following] = time.perf_counter_ns()
        conn.send(orjson.dumps({"type": "update.trip", "data": {"id": data["id"], "status": following}}))

    async def run(self, deadline_ns: int, step_timeout: float) -> None:
        loop, seq, stats = asyncio.get_running_loop(), 0, self.stats
        assert self.rider is not None
        while time.time_ns() < deadline_ns:
            seq += 1
            self.address = f"lc:{self.idx}:{seq}"
            self.done = loop.create_future()
            self.sent = {"create": time.perf_counter_ns()}
            self.rider.send(trip_frame(self.address))
            try:
                await asyncio.wait_for(self.done, step_timeout)
            except TimeoutError:
                stats.stalls += 1
                continue
            except RuntimeError:  # an error frame, counted in fail()
                await asyncio.sleep(0.05)
                continue
            stats.completed += 1
            if time.time_ns() <= deadline_ns:
                stats.in_window += 1


@dataclass
class LifecycleStats:
    rider_us: array = field(default_factory=lambda: array("q"))  # driver's update sent -> rider receives it
    echo_us: array = field(default_factory=lambda: array("q"))  # rider's create sent -> its echo
    reply_us: array = field(default_factory=lambda: array("q"))  # driver's update sent -> its reply
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    stalls: int = 0
    completed: int = 0
    in_window: int = 0
    driver_frames: int = 0


def _rider_handler(outstanding: dict[tuple[int, int], int], stats: dict[str, Any]) -> Handler:
    """Counts the echo of each bench trip a rider created (send time -> echo) and the error frames."""

    def handler(conn: Conn, payload: bytes) -> None:
        if payload.startswith(ERROR_PREFIX):
            stats["errors"][f"rider: {error_code(payload)}"] += 1
            return
        i = payload.find(BENCH_KEY)
        if i < 0:
            return
        _, rider, seq = payload[i + len(BENCH_KEY) : payload.index(b'"', i + len(BENCH_KEY))].split(b":")
        if (sent := outstanding.pop((int(rider), int(seq)), None)) is not None:
            stats["created"] += 1
            stats["echo_us"].append((time.time_ns() - sent) // 1000)

    return handler


async def broadcast_riders(
    ws: str, riders: list[Account], duration: float, rate: float, once: bool = False
) -> dict[str, Any]:
    """Riders create bench trips at ``rate`` per second in total for ``duration`` s (or one trip, ``once``);
    every pick_up_address carries the send time (time.time_ns, shared by all processes) for the drivers."""
    loop = asyncio.get_running_loop()
    outstanding: dict[tuple[int, int], int] = {}
    stats: dict[str, Any] = {
        "created": 0,
        "skipped": 0,
        "lost": 0,
        "errors": collections.Counter(),
        "echo_us": array("q"),
    }
    handler = _rider_handler(outstanding, stats)
    conns = (await open_many([f"{ws}?token={r.access}" for r in riders], len(riders), handler))["conns"]
    if len(conns) < len(riders):
        raise RuntimeError(f"only {len(conns)} of {len(riders)} rider sockets opened")
    interval = len(conns) / rate if rate else 0.0
    stats["first_ns"] = time.time_ns()
    t_end = loop.time() + duration

    def send(k: int, seq: int) -> None:
        now = time.time_ns()
        outstanding[(k, seq)] = now
        conns[k].send(trip_frame(f"bench:{now}:{k}:{seq}"))

    async def ride(k: int) -> None:
        start, seq = loop.time() + k * interval / len(conns), 0
        while (at := start + seq * interval) < t_end:
            if (delay := at - loop.time()) > 0:
                await asyncio.sleep(delay)
            if sum(1 for key in outstanding if key[0] == k) >= 200:  # the server is far behind: do not pile on
                stats["skipped"] += 1
            else:
                send(k, seq)
            seq += 1

    if once:
        send(0, 0)
    else:
        await asyncio.gather(*(ride(k) for k in range(len(conns))))
    limit = loop.time() + 10
    while outstanding and loop.time() < limit:
        await asyncio.sleep(0.01)
    stats["lost"] = len(outstanding)
    await close_all(conns)
    return stats
