"""This worker's drivers' location feeds: at most one fix per interval per driver, the newest of a burst.

A driver may send fixes as fast as it likes. The first is applied at once; the ones that arrive within the
interval after it replace each other, and the newest is applied when the interval has passed. Nothing queues:
each driver has one pending slot and at most one write in flight. The fixes of all drivers applied within a few
milliseconds are recorded in the presence store together and, for a driver with an active trip, sent to the
trip's rider.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from taxi.errors import BrokerUnavailable
from taxi.schemas import LocationFix
from taxi.services.presence import Presence
from taxi.services.trip_events import TripEvents

log = logging.getLogger("taxi.locations")

FLUSH_DELAY_S = 0.005  # fixes applied within this are written together (a fix reaches its rider this much later)


@dataclass(eq=False)
class _Feed:
    sockets: int = 0
    active: set[str] = field(default_factory=set)  # the driver's STARTED or IN_PROGRESS trips
    last: float = float("-inf")  # monotonic time the last fix was applied
    pending: tuple[LocationFix, float] | None = None  # the newest fix not yet applied, and when it came
    timer: asyncio.TimerHandle | None = None
    writing: asyncio.Task[None] | None = None


class Locations:
    def __init__(self, presence: Presence, events: TripEvents[Any], min_interval_s: float) -> None:
        self.presence = presence
        self.events = events
        self.min_interval_s = min_interval_s
        self._feeds: dict[int, _Feed] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._batch: dict[int, tuple[_Feed, LocationFix, float]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._failing = False

    def connected(self, driver: int, active_trip_ids: list[str]) -> None:
        """A socket of ``driver`` opened on this worker; ``active_trip_ids`` are the trips it drives."""
        feed = self._feeds.setdefault(driver, _Feed())
        feed.sockets += 1
        feed.active.update(active_trip_ids)

    def disconnected(self, driver: int) -> None:
        """A socket of ``driver`` closed; after its last one the driver is offline. Never awaits."""
        feed = self._feeds.get(driver)
        if feed is None:
            return
        feed.sockets -= 1
        if feed.sockets > 0:
            return
        del self._feeds[driver]
        if feed.timer is not None:
            feed.timer.cancel()
        self._background(self._forget(driver, feed.writing))

    def trip_started(self, driver: int, trip_id: str) -> None:
        feed = self._feeds.get(driver)
        if feed is not None:
            feed.active.add(trip_id)

    def trip_ended(self, driver: int, trip_id: str) -> None:
        feed = self._feeds.get(driver)
        if feed is not None:
            feed.active.discard(trip_id)

    def fix(self, driver: int, fix: LocationFix) -> None:
        """A fix from a socket of ``driver``: applied now, or kept as the newest until the interval has passed."""
        feed = self._feeds.get(driver)
        if feed is None:
            return
        feed.pending = (fix, time.time())
        if feed.timer is None and feed.writing is None:
            self._schedule(driver, feed)

    def _schedule(self, driver: int, feed: _Feed) -> None:
        due = feed.last + self.min_interval_s - time.monotonic()
        if due <= 0:
            self._apply(driver, feed)
        else:
            feed.timer = asyncio.get_running_loop().call_later(due, self._apply, driver, feed)

    def _apply(self, driver: int, feed: _Feed) -> None:
        feed.timer = None
        if feed.pending is None or self._feeds.get(driver) is not feed:
            return
        (fix, at), feed.pending = feed.pending, None
        feed.last = time.monotonic()
        self._batch[driver] = (feed, fix, at)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="location-fixes")
        feed.writing = self._flusher

    async def _flush(self) -> None:
        """Write the fixes applied in the last few milliseconds together: one round trip for all of them, instead
        of one each (thousands of drivers would otherwise queue for the store's connections)."""
        batch: dict[int, tuple[_Feed, LocationFix, float]] = {}
        try:
            await asyncio.sleep(FLUSH_DELAY_S)
            batch, self._batch = self._batch, {}
            self._flusher = None  # fixes applied from now on go into the next flush
            await self._write(batch)
        finally:
            if self._flusher is asyncio.current_task():
                self._flusher = None
            for driver, (feed, _, _) in batch.items():
                self._written(driver, feed)

    def _written(self, driver: int, feed: _Feed) -> None:
        feed.writing = None
        if feed.pending is not None and self._feeds.get(driver) is feed:
            self._schedule(driver, feed)

    async def _write(self, batch: dict[int, tuple[_Feed, LocationFix, float]]) -> None:
        try:
            stored = await self.presence.record_many([(driver, fix, at) for driver, (_, fix, at) in batch.items()])
            for (feed, _, _), kept in zip(batch.values(), stored, strict=True):
                for trip_id in list(feed.active):
                    await self.events.driver_moved(trip_id, kept.out())
        except BrokerUnavailable as exc:
            if not self._failing:
                log.warning("driver positions cannot be stored or sent (%s); retrying with the next fix", exc)
            self._failing = True
            return
        if self._failing:
            self._failing = False
            log.warning("driver positions are stored and sent again")

    async def _forget(self, driver: int, writing: asyncio.Task[None] | None) -> None:
        if writing is not None:
            await asyncio.wait([writing])  # a fix still being stored must not outlive the goodbye
        if driver in self._feeds:
            return  # it came back meanwhile
        try:
            await self.presence.forget(driver)
        except BrokerUnavailable as exc:
            log.warning("driver %d went offline but its position could not be removed (%s)", driver, exc)

    def _background(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop every timer and wait for writes in flight (worker shutdown)."""
        for feed in self._feeds.values():
            if feed.timer is not None:
                feed.timer.cancel()
        pending = [f.writing for f in self._feeds.values() if f.writing is not None] + list(self._tasks)
        if pending:
            await asyncio.wait(pending, timeout=2)
