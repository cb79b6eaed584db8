"""Which drivers are available, and where: the rules of nearby dispatch over the presence store.

A driver is available while connected, with a fresh fix (younger than ``stale_s``), not driving a trip that is
STARTED or IN_PROGRESS, and not switched off. A request with a pick-up point goes to the available drivers
within ``radius_m`` of it (great-circle); one without goes to every connected driver not busy and not off.
Busy is read from the trips themselves, so it can never disagree with them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from taxi import geo
from taxi.geo import Point
from taxi.queries import trips as q
from taxi.schemas import LocationFix
from taxi.services.presence_store import Fix, PresenceStore
from taxi.services.trip_events import Audience

NEARBY_LIMIT = 50  # drivers shown on a rider's map
NEAR_SLACK_M = 1.0  # the store's coarse distance filter may round differently from geo.distance_m


class Presence:
    def __init__(
        self, store: PresenceStore, radius_m: float, stale_s: float, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.radius_m = radius_m
        self.stale_s = stale_s
        self.resolution = geo.resolution_for(radius_m)
        self._clock = clock

    async def record(self, driver: int, sent: LocationFix, at: float | None = None) -> Fix:
        """Keep a driver's fix (received at ``at``, now by default) as its current position."""
        return (await self.record_many([(driver, sent, self._clock() if at is None else at)]))[0]

    async def record_many(self, fixes: list[tuple[int, LocationFix, float]]) -> list[Fix]:
        """``record`` for several drivers' fixes (driver, fix, received at) in one write."""
        kept = [Fix(f.lat, f.lng, f.heading, f.speed, at) for _, f, at in fixes]
        cells = [geo.cell_of(fix.lat, fix.lng, self.resolution) for fix in kept]
        await self.store.put_many([(d, fix, cell) for (d, _, _), fix, cell in zip(fixes, kept, cells, strict=True)])
        return kept

    async def forget(self, driver: int) -> None:
        await self.store.forget(driver)

    async def switch(self, driver: int, available: bool) -> None:
        """``update.availability``: a driver switched off hears no request until it switches back on."""
        await self.store.set_off(driver, not available)

    def fresh(self, fix: Fix) -> bool:
        return self._clock() - fix.at < self.stale_s

    async def fresh_fixes(self, drivers: Iterable[int]) -> dict[int, Fix]:
        """The drivers' positions that still count (younger than the staleness limit)."""
        return {d: fix for d, fix in (await self.store.fixes(drivers)).items() if self.fresh(fix)}

    async def within(self, point: Point) -> list[tuple[int, Fix, float]]:
        """Drivers with a fresh fix within the radius of ``point``, nearest first (busy and off included)."""
        cells = geo.cells_within(point.lat, point.lng, self.radius_m, self.resolution)
        # The store keeps the fresh fixes (``fresh``'s rule, at one instant) and filters the distance coarsely, with
        # a metre of slack for its arithmetic; the exact distance rule is ours, below.
        candidates, stale = await self.store.near(
            cells, point.lat, point.lng, self.radius_m + NEAR_SLACK_M, self._clock() - self.stale_s
        )
        found = []
        for driver, fix in candidates.items():
            distance = geo.distance_m(point.lat, point.lng, fix.lat, fix.lng)
            if distance <= self.radius_m:
                found.append((driver, fix, distance))
        if stale:  # drivers whose socket died without a goodbye (a crashed worker): drop them from the index
            await self.store.unindex(stale)
        found.sort(key=lambda item: item[2])
        return found

    async def available_near(self, point: Point) -> list[tuple[int, Fix, float]]:
        """``within``, less the drivers who are busy or switched off."""
        found, off = await asyncio.gather(self.within(point), self.store.switched_off())  # neither needs the other
        if not found:
            return []
        unavailable = off | await q.busy_drivers([d for d, _, _ in found])
        return [item for item in found if item[0] not in unavailable]

    async def available(self, driver: int) -> bool:
        """Not switched off and not driving a trip (a fresh position is the search's business, not this)."""
        return not await self.store.is_off(driver) and not await q.busy_drivers([driver])

    async def audience(self, pick_up: Point | None) -> Audience:
        """Who hears a new request: the available drivers near its pick-up, or every driver not busy or off."""
        if pick_up is None:
            return Audience(skip=frozenset(await self.store.switched_off() | await q.busy_drivers()))
        return Audience(only=frozenset(driver for driver, _, _ in await self.available_near(pick_up)))
