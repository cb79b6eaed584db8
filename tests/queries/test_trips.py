"""The trip statements, on both backends: named rows, visibility, and the conditional writes."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from taxi import db as dbm
from taxi.domain import utcnow
from taxi.queries import trips, users


@pytest.fixture
async def connected(database_url):
    database = await dbm.connect(database_url, pool_size=4)
    yield database
    await database.aio_close()


async def make_user(name, group, active=True):
    user = await users.create(name, "x", "First", "Last", group, None)
    if not active:
        await dbm.execute(dbm.SQL("UPDATE taxi_user SET is_active = {p} WHERE id = {p}"), (False, user.id))
    return user


async def request(rider, age=0, pick_up="A"):
    trip_id = uuid.uuid4()
    assert await trips.insert(trip_id, utcnow() - timedelta(seconds=age), pick_up, "B", rider.id)
    return trip_id


async def test_a_stored_trip_reads_back_by_name(connected):
    rider = await make_user("r", "rider")
    trip_id = await request(rider, pick_up="1 Main St")
    trip = await trips.get(trip_id)
    assert trip is not None
    assert trip.id == str(trip_id) and trip.status == "REQUESTED"
    assert trip.pick_up_address == "1 Main St" and trip.drop_off_address == "B"
    assert trip.created.endswith("Z") and trip.created == trip.updated
    assert trip.rider == rider and trip.rider_id == rider.id
    assert trip.driver is None and trip.driver_id is None
    assert await trips.get(uuid.uuid4()) is None


async def test_riders_see_their_own_trips_and_drivers_open_requests_and_their_own(connected):
    rider, other = await make_user("r", "rider"), await make_user("o", "rider")
    driver = await make_user("d", "driver")
    old = await request(rider, age=60)
    new = await request(rider, age=1)
    theirs = await request(other, age=30)
    assert await trips.accept(theirs, driver.id, utcnow(), None)
    assert [t.id for t in await trips.visible_to(rider.id, "rider", 10)] == [str(new), str(old)]
    assert [t.id for t in await trips.visible_to(rider.id, "rider", 1)] == [str(new)]
    seen = await trips.visible_to(driver.id, "driver", 10)
    assert [t.id for t in seen] == [str(new), str(theirs), str(old)]
    assert seen[1].driver == driver
    stranger = await make_user("s", "driver")
    assert [t.id for t in await trips.visible_to(stranger.id, "driver", 10)] == [str(new), str(old)]


async def test_the_caller_is_checked_with_the_trips(connected):
    rider = await make_user("r", "rider")
    gone = await make_user("g", "rider", active=False)
    trip_id = await request(rider)
    assert await trips.caller_and_visible(rider.id, "rider", 5) == (rider, [await trips.get(trip_id)])
    assert await trips.caller_and_visible(rider.id, "driver", 5) is None  # the stored role decides
    assert await trips.caller_and_visible(gone.id, "rider", 5) is None
    loner = await make_user("l", "rider")
    assert await trips.caller_and_visible(loner.id, "rider", 5) == (loner, [])
    assert await trips.caller_and_trip(rider.id, trip_id) == (rider, await trips.get(trip_id))
    assert await trips.caller_and_trip(rider.id, uuid.uuid4()) == (rider, None)
    assert await trips.caller_and_trip(gone.id, trip_id) is None


async def test_acceptance_has_one_winner_and_later_steps_belong_to_the_driver(connected):
    rider, other = await make_user("r", "rider"), await make_user("o", "rider")
    first, second = await make_user("d1", "driver"), await make_user("d2", "driver")
    trip_id = await request(rider)
    assert not await trips.accept(trip_id, first.id, utcnow(), other.id)  # wrong rider claimed
    assert await trips.accept(trip_id, first.id, utcnow(), rider.id)
    assert not await trips.accept(trip_id, second.id, utcnow(), None)
    assert not await trips.advance(trip_id, "STARTED", "IN_PROGRESS", second.id, utcnow(), None)
    assert not await trips.advance(trip_id, "IN_PROGRESS", "COMPLETED", first.id, utcnow(), None)
    assert await trips.advance(trip_id, "STARTED", "IN_PROGRESS", first.id, utcnow(), None)
    trip = await trips.get(trip_id)
    assert trip is not None and (trip.status, trip.driver_id) == ("IN_PROGRESS", first.id)
    assert trip.updated > trip.created
    assert await trips.open_ids(rider.id, "rider") == [str(trip_id)]
    assert await trips.open_ids(first.id, "driver") == [str(trip_id)]
    assert await trips.advance(trip_id, "IN_PROGRESS", "COMPLETED", first.id, utcnow(), None)
    assert await trips.open_ids(rider.id, "rider") == [] and await trips.open_ids(first.id, "driver") == []


async def test_writes_of_a_deactivated_author_change_nothing(connected):
    rider = await make_user("r", "rider")
    driver = await make_user("d", "driver")
    trip_id = await request(rider)
    gone_rider = await make_user("gr", "rider", active=False)
    assert not await trips.insert(uuid.uuid4(), utcnow(), "A", "B", gone_rider.id)
    await dbm.execute(dbm.SQL("UPDATE taxi_user SET is_active = {p} WHERE id = {p}"), (False, driver.id))
    assert not await trips.accept(trip_id, driver.id, utcnow(), None)
    trip = await trips.get(trip_id)
    assert trip is not None and trip.status == "REQUESTED"
