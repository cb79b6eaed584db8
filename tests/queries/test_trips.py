"""The trip statements, on both backends: named rows, visibility, and the conditional writes."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from taxi import db as dbm
from taxi.domain import utcnow
from taxi.geo import Point
from taxi.paging import START, Keyset
from taxi.queries import trips, users
from taxi.schemas import TripRequest


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


async def request(rider, age=0, pick_up="A", at=None):
    trip_id = uuid.uuid4()
    form = TripRequest(pick_up, "B", at, Point(0.5, 0.5) if at else None)
    assert await trips.insert(trip_id, utcnow() - timedelta(seconds=age), form, rider.id)
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
    assert not await trips.insert(uuid.uuid4(), utcnow(), TripRequest("A", "B"), gone_rider.id)
    await dbm.execute(dbm.SQL("UPDATE taxi_user SET is_active = {p} WHERE id = {p}"), (False, driver.id))
    assert not await trips.accept(trip_id, driver.id, utcnow(), None)
    trip = await trips.get(trip_id)
    assert trip is not None and trip.status == "REQUESTED"


async def store(trip_id, created, status, rider, driver):
    stamp = dbm.timestamp(created)
    await dbm.execute(
        dbm.SQL(
            "INSERT INTO taxi_trip (id, created, updated, pick_up_address, drop_off_address, status, rider_id, "
            "driver_id) VALUES ({p}, {p}, {p}, 'A', 'B', {p}, {p}, {p})"
        ),
        (trip_id.hex, stamp, stamp, status, rider.id if rider else None, driver.id if driver else None),
    )


async def pages(user_id, role, limit, status):
    """Every trip of the list, read ``limit`` at a time, each page after the last trip of the one before."""
    seen, before = [], START
    while True:
        page = await trips.visible_to(user_id, role, limit, status=status, before=before)
        found = await trips.caller_and_visible(user_id, role, limit, status=status, before=before)
        assert found is not None and found[1] == page
        seen += [t.id for t in page]
        if len(page) < limit:
            return seen
        before = Keyset.of(page[-1].created, page[-1].id)


async def test_trip_lists_are_the_newest_visible_trips_with_ties_broken_by_id(connected):
    """A driver's list merges open requests and their own trips; a rider's is their own. Either way: exactly the
    visible trips, newest first, equal timestamps in descending id order, for every page size."""
    riders = [await make_user(f"r{i}", "rider") for i in range(2)]
    drivers = [await make_user(f"d{i}", "driver") for i in range(2)]
    start = utcnow() - timedelta(hours=1)
    stored = []
    for n in range(40):
        created = start + timedelta(seconds=n // 4)  # four trips share each timestamp: the id decides
        status = ("REQUESTED", "STARTED", "IN_PROGRESS", "COMPLETED", "REQUESTED")[n % 5]
        driver = None if status == "REQUESTED" else drivers[n % 3 % 2]
        rider = None if n % 7 == 0 else riders[n % 2]  # a deleted rider leaves NULL
        trip_id = uuid.uuid4()
        await store(trip_id, created, status, rider, driver)
        stored.append((created, trip_id, status, rider.id if rider else None, driver.id if driver else None))
    statuses = {str(t[1]): t[2] for t in stored}
    newest_first = sorted(stored, key=lambda t: (t[0], t[1]), reverse=True)
    expected = {("rider", user.id): [str(t[1]) for t in newest_first if t[3] == user.id] for user in riders} | {
        ("driver", user.id): [str(t[1]) for t in newest_first if t[2] == "REQUESTED" or t[4] == user.id]
        for user in drivers
    }
    for (role, user_id), ids in expected.items():
        for limit in (1, 2, 3, 5, 8, 13, 21, 40, 500):
            listed = await trips.visible_to(user_id, role, limit)
            assert [t.id for t in listed] == ids[:limit], (role, user_id, limit)
            caller, with_caller = await trips.caller_and_visible(user_id, role, limit)
            assert caller.id == user_id and with_caller == listed
        # Page by page, each after the last row of the one before: the same trips in the same order, also within
        # one status (ties are cut mid-page, and pages end in the middle of a tie).
        for status in (None, "REQUESTED", "COMPLETED"):
            wanted = [i for i in ids if status is None or statuses[i] == status]
            for limit in (1, 3, 4, 7):
                assert await pages(user_id, role, limit, status) == wanted, (role, user_id, limit, status)
    listed = await trips.visible_to(drivers[0].id, "driver", 40)
    assert {t.status for t in listed} == {"REQUESTED", "STARTED", "IN_PROGRESS", "COMPLETED"}
    assert all(t.driver_id in (None, drivers[0].id) for t in listed)


@pytest.fixture
async def pg_connected(pg_database_url):
    database = await dbm.connect(pg_database_url, pool_size=2)
    yield database
    await database.aio_close()


async def test_a_drivers_first_page_reads_a_page_of_trips_not_every_open_request(pg_connected):
    """10,000 open requests must not make the first page of every driver read, join and sort them all (PostgreSQL's
    EXPLAIN ANALYZE counts the trip rows read; the embedded SQLite has no such count)."""
    rider = await make_user("r", "rider")
    driver = await make_user("d", "driver")
    await dbm.execute(
        dbm.SQL(
            "INSERT INTO taxi_trip (id, created, updated, pick_up_address, drop_off_address, status, rider_id) "
            "SELECT gen_random_uuid(), now() - g * interval '1 second', now(), 'A', 'B', 'REQUESTED', {p} "
            "FROM generate_series(1, 10000) g"
        ),
        (rider.id,),
    )
    await dbm.execute(dbm.SQL("ANALYZE taxi_trip"))
    statement = trips._reads().lists["driver", False]
    explain = dbm.SQL("EXPLAIN (ANALYZE, FORMAT JSON) " + statement.sql.template)
    values = trips._list_args(statement, driver.id, 1, trips.Reach(52.5, 13.4, 5000.0), None, START)
    plan = (await dbm.fetch_all(explain, values))[0][0]

    def trip_rows_read(node):
        own = node["Actual Rows"] * node["Actual Loops"] if node.get("Relation Name") == "taxi_trip" else 0
        return own + sum(trip_rows_read(child) for child in node.get("Plans", []))

    assert trip_rows_read(plan[0]["Plan"]) <= 2, plan


async def test_a_driver_sees_located_requests_only_within_its_reach(connected):
    rider, driver = await make_user("r", "rider"), await make_user("d", "driver")
    anywhere = await request(rider, age=3)
    berlin = await request(rider, age=2, at=Point(52.52, 13.405))
    stored = await trips.get(berlin)
    assert stored.pick_up_location == Point(52.52, 13.405) and stored.drop_off_location == Point(0.5, 0.5)
    # 0.01 degrees of latitude is 1,112 m: inside a 1,200 m reach, outside a 1,000 m one.
    near = trips.Reach(52.53, 13.405, 1200.0)
    assert [t.id for t in await trips.visible_to(driver.id, "driver", 10, near)] == [str(berlin), str(anywhere)]
    far = trips.Reach(52.53, 13.405, 1000.0)
    assert [t.id for t in await trips.visible_to(driver.id, "driver", 10, far)] == [str(anywhere)]
    # Without a fresh position a driver is near nothing: it still sees the requests that name no place.
    assert [t.id for t in await trips.visible_to(driver.id, "driver", 10)] == [str(anywhere)]
    found = await trips.caller_and_visible(driver.id, "driver", 10, near)
    assert found is not None and [t.id for t in found[1]] == [str(berlin), str(anywhere)]


async def test_busy_drivers_are_those_driving_a_started_or_in_progress_trip(connected):
    rider = await make_user("r", "rider")
    one, two, idle = await make_user("d1", "driver"), await make_user("d2", "driver"), await make_user("d3", "driver")
    first, second, third = await request(rider), await request(rider), await request(rider)
    assert await trips.accept(first, one.id, utcnow(), None)
    assert await trips.accept(second, two.id, utcnow(), None)
    assert await trips.advance(second, "STARTED", "IN_PROGRESS", two.id, utcnow(), None)
    assert await trips.busy_drivers() == {one.id, two.id}
    assert await trips.busy_drivers([one.id, idle.id]) == {one.id}
    assert await trips.busy_drivers([]) == set()
    assert await trips.advance(second, "IN_PROGRESS", "COMPLETED", two.id, utcnow(), None)
    assert await trips.busy_drivers([one.id, two.id, idle.id]) == {one.id}
    assert third  # still REQUESTED: waiting is not busy
