"""Nearby dispatch and live driver location over a real server: protocol version 2 opt-in, who hears a request,
the car's moves reaching its rider, the driver's list and the riders' map.

Each test runs twice: on PostgreSQL with the Redis broker and presence, and on the embedded default (SQLite,
everything in process).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from taxi.geo import Point
from tests.services.test_presence import destination
from tests.support import SyncDB, bearer, eventually
from tests.wsclient import WAIT, Live, ask, connect, recv, send, silent, still_open, trip_request

PICK_UP = Point(52.52, 13.405)
RADIUS = 5000
STALE_S = 2


@pytest.fixture
def stale_s():
    return 30


@pytest.fixture
def settings(deployment, stale_s):
    return dataclasses.replace(deployment, location_min_interval_ms=300, location_stale_s=stale_s)


@pytest.fixture
def sql(deployment):
    return SyncDB(deployment.database)


@pytest.fixture
def live(client):
    return Live(client)


def located(point: Point = PICK_UP, **extra) -> dict:
    return trip_request(pick_up_location={"lat": point.lat, "lng": point.lng}, **extra)


def at(metres: float, bearing: float = 0.0) -> dict:
    point = destination(PICK_UP, metres, bearing)
    return {"lat": point.lat, "lng": point.lng}


class Map:
    """The riders' map (``GET /api/drivers/nearby/``), read from inside a scenario."""

    def __init__(self, live: Live, token: str) -> None:
        self.url = f"http://127.0.0.1:{live.client.port}/api/drivers/nearby/"
        self.headers = bearer(token)

    async def around(self, point: Point = PICK_UP) -> list[dict]:
        async with httpx.AsyncClient() as http:
            resp = await http.get(self.url, params={"lat": point.lat, "lng": point.lng}, headers=self.headers)
        assert resp.status_code == 200, resp.text
        return list(resp.json())

    async def shows(self, count: int, point: Point = PICK_UP) -> list[dict]:
        """Wait until the map shows ``count`` available drivers (fixes are stored just after they are sent)."""
        return await eventually(
            lambda: self.around(point), f"{count} drivers on the map", until=lambda d: len(d) == count
        )


def test_version_2_is_opt_in_and_a_version_1_socket_never_sees_its_messages(live):
    rider = live.account("rider@example.com", "rider")
    driver = live.account("driver@example.com", "driver")

    async def scenario():
        d = await connect(live.base, driver["access"], protocol=2)
        assert d.subprotocol == "taxi.v2"  # the server selected it in the handshake
        r2 = await connect(live.base, rider["access"] + "&protocol=2")  # the query string opts in too
        await send(d, "update.location", at(300))
        await Map(live, rider["access"]).shows(1)
        trip = (await ask(r2, "create.trip", located()))["data"]
        assert trip["pick_up_location"] == {"lat": PICK_UP.lat, "lng": PICK_UP.lng}
        assert trip["drop_off_location"] is None and trip["driver_location"] is None
        assert (await recv(d))["data"]["id"] == trip["id"]
        r1 = await connect(live.base, rider["access"])  # the reference client: no subprotocol, no query
        assert r1.subprotocol is None
        accepted = await ask(d, "update.trip", {**trip, "status": "STARTED", "driver": driver["id"]})
        assert accepted["data"]["driver_location"]["lat"] == pytest.approx(at(300)["lat"])
        for socket in (r1, r2):
            assert (await recv(socket))["data"]["status"] == "STARTED"
        await send(d, "update.location", {**at(250), "heading": 181.5, "speed": 9.25})
        move = await recv(r2)
        assert move["type"] == "driver.location"
        data = move["data"]
        assert (data["trip_id"], data["heading"], data["speed"]) == (trip["id"], 181.5, 9.25)
        assert (data["lat"], data["lng"]) == (at(250)["lat"], at(250)["lng"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["at"]), data["at"]
        # A burst: the newest position arrives, not a backlog of every one.
        for n in range(60):
            await send(d, "update.location", at(200 - n))
        moves = [await recv(r2)]
        while moves[-1]["data"]["lat"] != at(141)["lat"]:
            moves.append(await recv(r2))
        assert len(moves) <= 3 and await silent(r2, 0.5)
        assert await silent(r1, 0.5)  # never a driver.location on version 1
        await still_open(r1)

    live.run(scenario())


def test_a_protocol_other_than_1_or_2_is_refused_at_the_handshake(live):
    rider = live.account("rider@example.com", "rider")

    async def scenario():
        with pytest.raises(InvalidStatus) as refused:
            await websockets.connect(f"{live.base}/taxi/?token={rider['access']}&protocol=3", open_timeout=WAIT)
        assert refused.value.response.status_code == 400
        assert b'"protocol"' in refused.value.response.body

    live.run(scenario())


def test_location_messages_are_checked_and_bad_ones_answered_with_the_fields(live):
    rider = live.account("rider@example.com", "rider")
    driver = live.account("driver@example.com", "driver")

    async def scenario():
        d = await connect(live.base, driver["access"], protocol=2)
        cases = [
            ({"lat": 90.5, "lng": 0}, {"lat"}),
            ({"lat": 0, "lng": -180.01}, {"lng"}),
            ({"lat": "52.1", "lng": 13}, {"lat"}),
            ({"lng": 13}, {"lat"}),
            ({"lat": 1, "lng": 2, "heading": 361}, {"heading"}),
            ({"lat": 1, "lng": 2, "speed": -1}, {"speed"}),
            ({"lat": True, "lng": 2}, {"lat"}),
        ]
        for data, fields in cases:
            error = await ask(d, "update.location", data)
            assert error["type"] == "error" and error["data"]["code"] == "invalid", (data, error)
            assert set(error["data"]["fields"]) == fields, (data, error)
        error = await ask(d, "update.availability", {"available": "no"})
        assert error["data"]["code"] == "invalid" and set(error["data"]["fields"]) == {"available"}
        bad_trip = await ask(d, "echo.message", "still here?")
        assert bad_trip == {"type": "echo.message", "data": "still here?"}
        r = await connect(live.base, rider["access"], protocol=2)
        assert (await ask(r, "update.location", {"lat": 1, "lng": 2}))["data"]["code"] == "forbidden"
        assert (await ask(r, "update.availability", {"available": False}))["data"]["code"] == "forbidden"
        r_located = await ask(r, "create.trip", trip_request(pick_up_location={"lat": 91, "lng": 0}))
        assert r_located["data"]["code"] == "invalid" and set(r_located["data"]["fields"]) == {"pick_up_location"}
        v1 = await connect(live.base, driver["access"])
        reply = await ask(v1, "update.location", {"lat": 1, "lng": 2})
        assert reply["data"]["code"] == "unknown_type" and "version 2" in reply["data"]["detail"]
        await still_open(v1)
        await still_open(d)

    live.run(scenario())


def test_a_located_request_reaches_exactly_the_available_drivers_in_range_and_its_acceptance_them(live):
    riders = [live.account(f"rider{n}@example.com", "rider") for n in range(2)]
    names = ("near", "near2", "far", "off", "v1")
    drivers = {name: live.account(f"{name}@example.com", "driver") for name in names}

    async def scenario():
        s = {
            name: await connect(live.base, d["access"], protocol=1 if name == "v1" else 2)
            for name, d in drivers.items()
        }
        for name, where in (("near", at(0.99 * RADIUS, 10)), ("near2", at(100, 200)), ("far", at(1.01 * RADIUS, 10))):
            await send(s[name], "update.location", where)
        await send(s["off"], "update.location", at(50))
        await send(s["off"], "update.availability", {"available": False})
        await still_open(s["off"])  # its answer comes after the switch was applied
        rider_map = Map(live, riders[0]["access"])
        await rider_map.shows(2)
        r = await connect(live.base, riders[0]["access"])
        trip = (await ask(r, "create.trip", located()))["data"]
        for name in ("near", "near2"):
            assert (await recv(s[name]))["data"]["id"] == trip["id"], name
        for name in ("far", "off", "v1"):
            assert await silent(s[name]), name
        await ask(s["near"], "update.trip", {**trip, "status": "STARTED", "driver": drivers["near"]["id"]})
        taken = await recv(s["near2"])  # it heard the request, so it hears that it is gone
        assert (taken["data"]["id"], taken["data"]["status"]) == (trip["id"], "STARTED")
        for name in ("far", "off", "v1"):
            assert await silent(s[name], 0.2), name
        # "near" is busy now: the next request nearby goes to near2 only; off switches back on and hears it too.
        await send(s["off"], "update.availability", {"available": True})
        await still_open(s["off"])
        await rider_map.shows(2)
        r2 = await connect(live.base, riders[1]["access"])
        second = (await ask(r2, "create.trip", located()))["data"]
        assert (await recv(s["near2"]))["data"]["id"] == second["id"]
        assert (await recv(s["off"]))["data"]["id"] == second["id"]
        assert (await recv(r))["type"] == "echo.message"  # the rider of the first trip heard its acceptance
        assert await silent(s["near"]) and await silent(s["far"], 0.1) and await silent(s["v1"], 0.1)

    live.run(scenario())


def test_a_request_without_a_place_reaches_every_driver_not_busy_or_off_positions_or_not(live, sql):
    rider = live.account("rider@example.com", "rider")
    names = ("reference", "far", "off", "busy")
    drivers = {name: live.account(f"{name}@example.com", "driver") for name in names}
    sql.add_trip(rider["id"], drivers["busy"]["id"], status="IN_PROGRESS")

    async def scenario():
        s = {
            name: await connect(live.base, d["access"], protocol=1 if name == "reference" else 2)
            for name, d in drivers.items()
        }
        await send(s["far"], "update.location", {"lat": -33.9, "lng": 151.2})
        await send(s["off"], "update.availability", {"available": False})
        await still_open(s["off"])  # its answer comes after the switch was applied
        r = await connect(live.base, rider["access"])
        trip = (await ask(r, "create.trip", trip_request()))["data"]
        for name in ("reference", "far"):
            assert (await recv(s[name]))["data"]["id"] == trip["id"], name
        assert await silent(s["off"]) and await silent(s["busy"], 0.1)

    live.run(scenario())


@pytest.mark.parametrize("stale_s", [STALE_S])
def test_a_position_older_than_the_limit_does_not_count(live):
    rider = live.account("rider@example.com", "rider")
    driver = live.account("driver@example.com", "driver")

    async def scenario():
        d = await connect(live.base, driver["access"], protocol=2)
        await send(d, "update.location", at(200))
        rider_map = Map(live, rider["access"])
        await rider_map.shows(1)
        await asyncio.sleep(STALE_S + 0.3)
        assert await rider_map.around() == []
        r = await connect(live.base, rider["access"])
        await ask(r, "create.trip", located())
        assert await silent(d)
        await send(d, "update.location", at(200))
        await rider_map.shows(1)
        second = (await ask(r, "create.trip", located()))["data"]
        assert (await recv(d))["data"]["id"] == second["id"]

    live.run(scenario())


def test_the_drivers_list_and_the_riders_map_follow_the_same_rule(live):
    rider = live.account("rider@example.com", "rider")
    near = live.account("near@example.com", "driver")
    far = live.account("far@example.com", "driver")
    nowhere = live.account("nowhere@example.com", "driver")

    async def scenario():
        dn = await connect(live.base, near["access"], protocol=2)
        df = await connect(live.base, far["access"], protocol=2)
        await send(dn, "update.location", {**at(1234.5, 45), "heading": 12.0})
        await send(df, "update.location", at(8000))
        rider_map = Map(live, rider["access"])
        shown = await rider_map.shows(1)
        expected = at(1234.5, 45)
        assert shown == [{"lat": round(expected["lat"], 3), "lng": round(expected["lng"], 3), "heading": 12.0}]
        r = await connect(live.base, rider["access"])
        here = (await ask(r, "create.trip", located()))["data"]
        anywhere = (await ask(r, "create.trip", trip_request()))["data"]
        return here, anywhere

    here, anywhere = live.run(scenario())
    listed = {
        name: [t["id"] for t in live.get("/api/trip/", d["access"]).json]
        for name, d in (("near", near), ("far", far), ("nowhere", nowhere))
    }
    assert listed == {"near": [anywhere["id"], here["id"]], "far": [anywhere["id"]], "nowhere": [anywhere["id"]]}
    assert live.get("/api/drivers/nearby/?lat=52.5&lng=13.4", near["access"]).status == 403
    bad = live.get("/api/drivers/nearby/?lat=north&lng=13.4", rider["access"])
    assert bad.status == 400 and set(bad.json) == {"lat"}
    assert live.get("/api/drivers/nearby/?lat=52.5", rider["access"]).status == 400
    assert live.client.get("/api/drivers/nearby/?lat=52.5&lng=13.4")[1].status == 401


def test_the_trip_shows_where_its_car_is_while_active(live):
    rider = live.account("rider@example.com", "rider")
    driver = live.account("driver@example.com", "driver")

    async def scenario():
        d = await connect(live.base, driver["access"], protocol=2)
        r = await connect(live.base, rider["access"])
        await send(d, "update.location", at(400))
        await Map(live, rider["access"]).shows(1)
        trip = (await ask(r, "create.trip", located(drop_off_location={"lat": 52.4, "lng": 13.5})))["data"]
        await recv(d)
        await ask(d, "update.trip", {**trip, "status": "STARTED"})
        await send(d, "update.location", {**at(380), "speed": 4.0})
        return trip

    trip = live.run(scenario())
    url = f"/api/trip/{trip['id']}/"
    shown = live.get(url, rider["access"]).json
    assert shown["drop_off_location"] == {"lat": 52.4, "lng": 13.5}
    assert shown["driver_location"] is not None
    assert set(shown["driver_location"]) == {"lat", "lng", "heading", "speed", "at"}
    [listed] = live.get("/api/trip/", rider["access"]).json
    assert listed["driver_location"] == shown["driver_location"]

    async def finish():
        d = await connect(live.base, driver["access"], protocol=2)
        for status in ("IN_PROGRESS", "COMPLETED"):
            assert (await ask(d, "update.trip", {**trip, "status": status}))["data"]["status"] == status

    live.run(finish())
    assert live.get(url, rider["access"]).json["driver_location"] is None
