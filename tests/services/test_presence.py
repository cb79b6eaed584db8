"""Nearby dispatch rules on both presence stores (this process's and Redis): geometry, staleness, switched off,
busy, and the coalescing of a driver's fixes."""

from __future__ import annotations

import asyncio
import math
import secrets
import uuid

import pytest
import redis.asyncio as aioredis

from taxi import db as dbm
from taxi import geo
from taxi.domain import utcnow
from taxi.geo import Point
from taxi.queries import trip_writes, users
from taxi.schemas import LocationFix, TripRequest
from taxi.services.locations import Locations
from taxi.services.presence import Presence
from taxi.services.presence_store import LocalPresenceStore, RedisPresenceStore
from taxi.services.trip_events import TripEvents
from tests.conftest import REDIS_URL, RUN_ID


def destination(origin: Point, metres: float, bearing_deg: float) -> Point:
    """The point ``metres`` from ``origin`` along the great circle at ``bearing_deg`` (on H3's sphere)."""
    d = metres / geo.EARTH_RADIUS_M
    b = math.radians(bearing_deg)
    lat1, lng1 = math.radians(origin.lat), math.radians(origin.lng)
    lat2 = math.asin(math.sin(lat1) * math.cos(d) + math.cos(lat1) * math.sin(d) * math.cos(b))
    lng2 = lng1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(lat1), math.cos(d) - math.sin(lat1) * math.sin(lat2))
    return Point(math.degrees(lat2), (math.degrees(lng2) + 540) % 360 - 180)


@pytest.fixture(params=["local", "redis"])
async def store(request):
    if request.param == "local":
        yield LocalPresenceStore()
        return
    client = aioredis.from_url(REDIS_URL)
    yield RedisPresenceStore(client, f"taxi_test_{RUN_ID}_{secrets.token_hex(3)}:")
    await client.aclose()


@pytest.fixture
async def connected(database_url):
    database = await dbm.connect(database_url, pool_size=4)
    yield database
    await database.aio_close()


async def drivers(count: int) -> list[int]:
    return [(await users.create(f"d{i}", "x", "", "", "driver", None)).id for i in range(count)]


def fix(point: Point) -> LocationFix:
    return LocationFix(point.lat, point.lng, 90.0, 8.5)


# Places where a latitude/longitude grid would break: the antimeridian (the circle spans +180/-180) and the poles.
PLACES = {
    "berlin": Point(52.52, 13.405),
    "antimeridian": Point(-16.5, 179.999),
    "north pole": Point(89.99, 45.0),
    "south pole": Point(-89.995, -120.0),
}


@pytest.mark.parametrize("place", list(PLACES))
@pytest.mark.parametrize("radius", [5000, 800, 40000])
async def test_a_driver_just_inside_the_radius_is_near_and_one_just_outside_is_not(connected, store, place, radius):
    pick_up = PLACES[place]
    presence = Presence(store, radius, stale_s=30)
    ids = await drivers(8)
    inside, outside = {}, {}
    for n, bearing in enumerate((0, 90, 180, 270)):  # every direction: across the antimeridian, over the pole
        inside[ids[n]] = destination(pick_up, 0.99 * radius, bearing)
        outside[ids[n + 4]] = destination(pick_up, 1.01 * radius, bearing + 45)
    for driver, point in (inside | outside).items():
        await presence.record(driver, fix(point))
    found = await presence.available_near(pick_up)
    assert {d for d, _, _ in found} == set(inside)
    assert [round(dist) for _, _, dist in found] == [round(0.99 * radius)] * 4
    audience = await presence.audience(pick_up)
    assert audience.only == frozenset(inside)


async def test_a_position_comes_back_as_the_driver_sent_it_with_or_without_heading_and_speed(connected, store):
    presence = Presence(store, 5000, stale_s=30, clock=lambda: 1_700_000_000.123)
    moving, parked = await drivers(2)
    pick_up = PLACES["berlin"]
    there = destination(pick_up, 250, 30)
    await presence.record(moving, LocationFix(there.lat, there.lng, 359.5, 12.25))
    await presence.record(parked, LocationFix(pick_up.lat, pick_up.lng, None, None))
    fixes = await presence.fresh_fixes([moving, parked])
    assert fixes[moving].out() == {
        "lat": there.lat,
        "lng": there.lng,
        "heading": 359.5,
        "speed": 12.25,
        "at": "2023-11-14T22:13:20.123Z",
    }
    assert (fixes[parked].heading, fixes[parked].speed) == (None, None), "a missing value stays null, never NaN"
    found = await presence.available_near(pick_up)
    assert [(d, f.lat, f.lng, f.heading) for d, f, _ in found] == [
        (parked, pick_up.lat, pick_up.lng, None),
        (moving, there.lat, there.lng, 359.5),
    ]


async def test_a_position_older_than_the_limit_does_not_count(connected, store):
    now = [1_000_000.0]
    presence = Presence(store, 5000, stale_s=30, clock=lambda: now[0])
    (driver,) = await drivers(1)
    pick_up = PLACES["berlin"]
    await presence.record(driver, fix(destination(pick_up, 100, 0)))
    now[0] += 29.9
    assert [d for d, _, _ in await presence.available_near(pick_up)] == [driver]
    assert driver in await presence.fresh_fixes([driver])
    now[0] += 0.2
    assert await presence.available_near(pick_up) == []
    assert await presence.fresh_fixes([driver]) == {}
    cells = geo.cells_within(pick_up.lat, pick_up.lng, 5000, presence.resolution)
    assert await store.near(cells, pick_up.lat, pick_up.lng, 5000, fresh_after=0) == ({}, {}), (
        "a stale driver found by a search leaves the index (a search that counts every fix as fresh finds nobody)"
    )


async def test_switched_off_and_busy_drivers_are_never_in_an_audience(connected, store):
    presence = Presence(store, 5000, stale_s=30)
    off, busy, free, far_away = await drivers(4)
    pick_up = PLACES["berlin"]
    for driver in (off, busy, free):
        await presence.record(driver, fix(destination(pick_up, 1000, 0)))
    await presence.switch(off, available=False)
    rider = await users.create("r", "x", "", "", "rider", None)
    trip_id = uuid.uuid4()
    assert (await trip_writes.insert(trip_id, utcnow(), TripRequest("A", "B"), rider.id, 100)).created
    assert await trip_writes.accept(trip_id, busy, utcnow(), None)
    assert (await presence.audience(pick_up)).only == {free}
    # A request that names no place goes to every driver but the busy and switched-off ones, wherever they are.
    assert (await presence.audience(None)).only is None
    assert (await presence.audience(None)).skip == {off, busy}
    await presence.switch(off, available=True)
    assert (await presence.audience(pick_up)).only == {free, off}
    assert far_away not in (await presence.audience(None)).skip


class Recorder:
    """A publisher that records what reaches each trip group."""

    def __init__(self) -> None:
        self.moves: list[tuple[str, dict]] = []

    async def join(self, member, group):  # pragma: no cover - not used here
        return None

    def leave(self, member, group):  # pragma: no cover - not used here
        return None

    async def publish(self, group, text, exclude=None, end=False, **narrowed):
        import json

        self.moves.append((group, json.loads(text)["data"]))


async def test_a_burst_of_fixes_is_coalesced_to_the_first_and_the_newest(connected, store):
    presence = Presence(store, 5000, stale_s=30)
    recorder = Recorder()
    locations = Locations(presence, TripEvents(recorder), min_interval_s=0.4)
    (driver,) = await drivers(1)
    locations.connected(driver, ["trip-1"])
    for n in range(200):  # 200 fixes in a few milliseconds
        locations.fix(driver, LocationFix(10.0 + n / 1e4, 20.0, None, None))
        await asyncio.sleep(0)
    await asyncio.sleep(0.1)
    assert [m["lat"] for _, m in recorder.moves] == [10.0], "the first is applied at once, the rest wait"
    await asyncio.sleep(0.5)
    assert [m["lat"] for _, m in recorder.moves] == [10.0, 10.0199], "then only the newest of the burst"
    assert {g for g, _ in recorder.moves} == {"trip:trip-1"}
    stored = (await presence.fresh_fixes([driver]))[driver]
    assert (stored.lat, stored.lng) == (10.0199, 20.0)
    await asyncio.sleep(0.5)
    assert len(recorder.moves) == 2, "nothing queued behind"
    locations.trip_ended(driver, "trip-1")
    locations.fix(driver, LocationFix(11.0, 20.0, None, None))
    await asyncio.sleep(0.1)
    assert len(recorder.moves) == 2 and (await presence.fresh_fixes([driver]))[driver].lat == 11.0
    locations.disconnected(driver)  # offline: its position is dropped
    await asyncio.sleep(0.1)
    assert await presence.fresh_fixes([driver]) == {}
    await locations.close()
