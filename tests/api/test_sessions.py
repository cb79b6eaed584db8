"""Sessions for phones over a real server: trip versions, resuming after a reconnect, cancelling and handing back,
the open-trip limit and retried requests.

Each test runs on PostgreSQL with the Redis broker and on the embedded default (SQLite, everything in process).
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import httpx
import pytest

from tests.support import SyncDB, bearer
from tests.wsclient import Live, ask, connect, recv, send, silent, trip_request


@pytest.fixture
def settings(deployment):
    # The open-trip limit at its default (the older tests lift it); the message rate lifted: the races below send
    # a hundred messages a socket within a second or two.
    return dataclasses.replace(deployment, max_open_trips_per_rider=1, ws_messages_per_s=100_000)


@pytest.fixture
def sql(deployment):
    return SyncDB(deployment.database)


@pytest.fixture
def live(client):
    return Live(client)


def step(trip: dict, status: str) -> dict:
    return {"id": trip["id"], "status": status}


async def until(ws, trip_id: str, *, status: str | None = None, error: bool = True) -> dict:
    """The next message about ``trip_id`` (in ``status`` if given), or the next error when ``error``."""
    while True:
        msg = await recv(ws)
        if msg["type"] == "error" and error:
            return msg
        data = msg["data"]
        if msg["type"] == "echo.message" and data["id"] == trip_id and (status is None or data["status"] == status):
            return msg


def test_every_change_raises_the_version_on_both_transports(live):
    rider = live.account("rider@example.com")
    driver = live.account("driver@example.com", "driver")

    async def scenario():
        r = await connect(live.base, rider["access"])
        d = await connect(live.base, driver["access"])
        trip = (await ask(r, "create.trip", trip_request()))["data"]
        assert trip["version"] == 1 and (await recv(d))["data"]["version"] == 1
        for version, status in enumerate(("STARTED", "IN_PROGRESS", "COMPLETED"), start=2):
            mine = (await ask(d, "update.trip", step(trip, status)))["data"]
            theirs = (await recv(r))["data"]
            assert mine["version"] == theirs["version"] == version and theirs["status"] == status
        await r.close()
        await d.close()
        return trip["id"]

    trip_id = live.run(scenario())
    assert live.get(f"/api/trip/{trip_id}/", rider["access"]).json["version"] == 4


def test_a_rider_cancels_a_request_and_every_driver_who_heard_of_it_is_told(live):
    rider = live.account("rider@example.com")
    drivers = [live.account(f"d{n}@example.com", "driver") for n in range(2)]

    async def scenario():
        r = await connect(live.base, rider["access"], protocol=2)
        # The reference client (version 1) hears of it too: a trip in a new status is still a trip to it.
        ds = [await connect(live.base, d["access"], protocol=p) for d, p in zip(drivers, (1, 2), strict=True)]
        trip = (await ask(r, "create.trip", trip_request()))["data"]
        for d in ds:
            assert (await recv(d))["data"]["id"] == trip["id"]
        cancelled = await ask(r, "cancel.trip", {"id": trip["id"], "reason": "found another ride"})
        assert cancelled["type"] == "echo.message"
        assert cancelled["data"]["status"] == "CANCELED" and cancelled["data"]["version"] == 2
        assert cancelled["data"]["cancel_reason"] == "found another ride"
        for d in ds:
            assert await recv(d) == cancelled
        # CANCELED is final: the rider holds no open trip any more, and asking again is refused.
        again = await ask(r, "create.trip", trip_request("C", "D"))
        assert again["type"] == "echo.message" and again["data"]["status"] == "REQUESTED"
        refused = await ask(r, "cancel.trip", {"id": trip["id"]})
        assert refused["data"]["code"] == "invalid_transition"
        for ws in (r, *ds):
            await ws.close()

    live.run(scenario())


def test_a_rider_cancels_an_accepted_trip_and_its_driver_is_free_again(live, sql):
    rider = live.account("rider@example.com")
    other = live.account("other@example.com")
    driver = live.account("driver@example.com", "driver")

    async def scenario():
        r = await connect(live.base, rider["access"], protocol=2)
        d = await connect(live.base, driver["access"], protocol=2)
        trip = (await ask(r, "create.trip", trip_request()))["data"]
        await recv(d)
        await ask(d, "update.trip", step(trip, "STARTED"))
        await recv(r)
        cancelled = await ask(r, "cancel.trip", {"id": trip["id"]})
        assert cancelled["data"]["status"] == "CANCELED" and cancelled["data"]["cancel_reason"] is None
        assert await recv(d) == cancelled
        # Busy no more: the next request reaches the driver.
        o = await connect(live.base, other["access"])
        nxt = await ask(o, "create.trip", trip_request())
        assert await recv(d) == nxt
        for ws in (r, d, o):
            await ws.close()
        return trip["id"]

    trip_id = live.run(scenario())
    assert sql.trip_status(trip_id) == ("CANCELED", driver["id"])  # the trip keeps who drove it


def test_a_driver_hands_back_a_trip_and_it_is_requested_again_without_them(live):
    rider = live.account("rider@example.com")
    first, second = (live.account(f"{n}@example.com", "driver") for n in ("first", "second"))

    async def scenario():
        r = await connect(live.base, rider["access"])
        d1 = await connect(live.base, first["access"], protocol=2)
        d2 = await connect(live.base, second["access"])
        trip = (await ask(r, "create.trip", trip_request()))["data"]
        await recv(d1)
        await recv(d2)
        accepted = await ask(d1, "update.trip", step(trip, "STARTED"))
        assert await recv(d2) == accepted  # taken
        assert await recv(r) == accepted
        back = await ask(d1, "cancel.trip", {"id": trip["id"], "reason": "flat tyre"})
        data = back["data"]
        assert data["status"] == "REQUESTED" and data["driver"] is None and data["version"] == 3
        assert await recv(r) == back
        assert await recv(d2) == back  # dispatched again, as a request
        assert await silent(d1)  # not to the driver who gave it up
        # The request is open again: the second driver takes it.
        taken = await ask(d2, "update.trip", step(trip, "STARTED"))
        assert taken["data"]["driver"]["id"] == second["id"] and taken["data"]["version"] == 4
        assert await recv(r) == taken
        for ws in (r, d1, d2):
            await ws.close()

    live.run(scenario())


def test_what_cannot_be_cancelled_says_why(live, sql):
    rider = live.account("rider@example.com")
    stranger = live.account("stranger@example.com")
    driver = live.account("driver@example.com", "driver")
    other_driver = live.account("other@example.com", "driver")
    riding = sql.add_trip(rider["id"], driver["id"], status="IN_PROGRESS")
    requested = sql.add_trip(stranger["id"])

    async def scenario():
        r = await connect(live.base, rider["access"], protocol=2)
        d = await connect(live.base, driver["access"], protocol=2)
        o = await connect(live.base, other_driver["access"], protocol=2)
        codes = {
            "in progress, rider": (await ask(r, "cancel.trip", {"id": riding}))["data"]["code"],
            "in progress, driver": (await ask(d, "cancel.trip", {"id": riding}))["data"]["code"],
            "someone else's trip": (await ask(r, "cancel.trip", {"id": requested}))["data"]["code"],
            "another driver's trip": (await ask(o, "cancel.trip", {"id": riding}))["data"]["code"],
            "a request, driver": (await ask(o, "cancel.trip", {"id": requested}))["data"]["code"],
            "unknown": (await ask(r, "cancel.trip", {"id": str(uuid.uuid4())}))["data"]["code"],
            "bad id": (await ask(r, "cancel.trip", {"id": "nope"}))["data"]["code"],
            "long reason": (await ask(r, "cancel.trip", {"id": riding, "reason": "x" * 256}))["data"]["code"],
        }
        v1 = await connect(live.base, rider["access"])
        codes["version 1"] = (await ask(v1, "cancel.trip", {"id": riding}))["data"]["code"]
        for ws in (r, d, o, v1):
            await ws.close()
        return codes

    assert live.run(scenario()) == {
        "in progress, rider": "invalid_transition",
        "in progress, driver": "invalid_transition",
        "someone else's trip": "not_found",
        "another driver's trip": "not_found",
        "a request, driver": "invalid_transition",
        "unknown": "not_found",
        "bad id": "invalid",
        "long reason": "invalid",
        "version 1": "unknown_type",
    }
    assert sql.trip_status(riding) == ("IN_PROGRESS", driver["id"])


def test_http_clients_cancel_with_a_post(live, sql):
    rider = live.account("rider@example.com")
    driver = live.account("driver@example.com", "driver")
    trip_id = sql.add_trip(rider["id"])
    client = live.client

    async def scenario():
        d = await connect(live.base, driver["access"])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{client.port}") as http:
            resp = await http.post(
                f"/api/trip/{trip_id}/cancel/", json={"reason": "changed plans"}, headers=bearer(rider["access"])
            )
        heard = await recv(d)
        await d.close()
        return resp, heard

    resp, heard = live.run(scenario())
    assert resp.status_code == 200, resp.text
    trip = resp.json()
    assert trip["status"] == "CANCELED" and trip["cancel_reason"] == "changed plans"
    assert heard == {"type": "echo.message", "data": trip}
    again = client.post(f"/api/trip/{trip_id}/cancel/", headers=bearer(rider["access"]))[1]
    assert again.status == 409 and "CANCELED" in again.json["detail"]
    assert client.post(f"/api/trip/{uuid.uuid4()}/cancel/", headers=bearer(rider["access"]))[1].status == 404
    assert client.post("/api/trip/nope/cancel/", headers=bearer(rider["access"]))[1].status == 404
    assert client.post(f"/api/trip/{trip_id}/cancel/")[1].status == 401
    long = client.post(f"/api/trip/{trip_id}/cancel/", json={"reason": "x" * 256}, headers=bearer(rider["access"]))[1]
    assert long.status == 400 and "reason" in long.json


def test_cancel_and_accept_racing_have_exactly_one_winner(live, sql):
    rider = live.account("rider@example.com")
    driver = live.account("driver@example.com", "driver")
    trips = [sql.add_trip(rider["id"]) for _ in range(50)]

    async def race(r, d, trip_id: str) -> tuple[str, str]:
        await asyncio.gather(
            send(r, "cancel.trip", {"id": trip_id, "version": 1}),  # cancel what the rider saw: the request
            send(d, "update.trip", {"id": trip_id, "status": "STARTED"}),
        )
        cancel = await until(r, trip_id, status="CANCELED")
        accept = await until(d, trip_id, status="STARTED")
        return (
            "won" if cancel["type"] == "echo.message" else cancel["data"]["code"],
            "won" if accept["type"] == "echo.message" else accept["data"]["code"],
        )

    async def scenario():
        r = await connect(live.base, rider["access"], protocol=2)
        d = await connect(live.base, driver["access"], protocol=2)
        results = [await race(r, d, trip_id) for trip_id in trips]
        await r.close()
        await d.close()
        return results

    results = live.run(scenario())
    losers = {"trip_unavailable", "invalid_transition"}
    for (cancel, accept), trip_id in zip(results, trips, strict=True):
        assert (cancel == "won") != (accept == "won"), (cancel, accept)
        assert {cancel, accept} - {"won"} <= losers
        assert sql.trip_status(trip_id)[0] == ("CANCELED" if cancel == "won" else "STARTED")


def test_ten_simultaneous_requests_from_one_rider_make_one_trip(live, sql):
    rider = live.account("rider@example.com")

    async def scenario():
        sockets = [await connect(live.base, rider["access"]) for _ in range(10)]
        await asyncio.gather(*(send(ws, "create.trip", trip_request()) for ws in sockets))
        replies = [await recv(ws) for ws in sockets]
        for ws in sockets:
            await ws.close()
        return replies

    replies = live.run(scenario())
    made = [r["data"] for r in replies if r["type"] == "echo.message"]
    refused = [r["data"] for r in replies if r["type"] == "error"]
    assert len(made) == 1 and len(refused) == 9, replies
    assert {e["code"] for e in refused} == {"trip_open"} and {e["trip_id"] for e in refused} == {made[0]["id"]}
    assert sql.fetch("SELECT count(*) FROM taxi_trip")[0][0] == 1


def test_a_repeated_request_id_returns_the_trip_it_made(live, sql):
    rider = live.account("rider@example.com")
    driver = live.account("driver@example.com", "driver")
    request_id = str(uuid.uuid4())

    async def scenario():
        r = await connect(live.base, rider["access"])
        d = await connect(live.base, driver["access"])
        first = await ask(r, "create.trip", trip_request(request_id=request_id))
        assert await recv(d) == first
        # The echo was lost, say: the phone asks again, on a new socket, and gets the same trip.
        r2 = await connect(live.base, rider["access"])
        assert await ask(r2, "create.trip", trip_request(request_id=request_id)) == first
        assert await silent(d)  # nobody else hears of a retry
        accepted = await ask(d, "update.trip", step(first["data"], "STARTED"))
        assert await recv(r) == accepted and await recv(r2) == accepted  # the retrying socket follows the trip
        # Later retries see the trip as it is now.
        assert await ask(r2, "create.trip", trip_request(request_id=request_id)) == accepted
        bad = await ask(r2, "create.trip", trip_request(request_id="not-a-uuid"))
        for ws in (r, r2, d):
            await ws.close()
        return first, bad

    first, bad = live.run(scenario())
    assert bad["data"]["code"] == "invalid" and "request_id" in bad["data"]["fields"]
    assert sql.fetch("SELECT count(*) FROM taxi_trip")[0][0] == 1
    assert first["data"]["status"] == "REQUESTED"


def test_resume_sends_what_changed_while_away_then_done(live):
    rider = live.account("rider@example.com")
    driver = live.account("driver@example.com", "driver")

    async def scenario():
        r = await connect(live.base, rider["access"], protocol=2)
        d = await connect(live.base, driver["access"], protocol=2)
        trip = (await ask(r, "create.trip", trip_request()))["data"]
        await recv(d)
        await r.close()  # the phone goes into a lift
        accepted = await ask(d, "update.trip", step(trip, "STARTED"))
        r = await connect(live.base, rider["access"], protocol=2)
        await send(r, "resume", {"trips": {trip["id"]: 1}})
        assert await recv(r) == accepted
        assert await recv(r) == {"type": "resume.done", "data": {"sent": 1}}
        # Up to date: nothing to send; and no live event repeats a version the client has.
        assert await ask(r, "resume", {"trips": {trip["id"]: 2}}) == {"type": "resume.done", "data": {"sent": 0}}
        progress = await ask(d, "update.trip", step(trip, "IN_PROGRESS"))
        assert await recv(r) == progress
        # A phone that lost everything lists nothing: its open trip comes anyway.
        fresh = await connect(live.base, rider["access"], protocol=2)
        await send(fresh, "resume", {"trips": {}})
        assert await recv(fresh) == progress
        assert await recv(fresh) == {"type": "resume.done", "data": {"sent": 1}}
        for ws in (r, d, fresh):
            await ws.close()

    live.run(scenario())


def test_resume_sends_listed_trips_that_ended_or_were_taken(live, sql):
    rider = live.account("rider@example.com")
    driver = live.account("driver@example.com", "driver")
    other = live.account("other@example.com", "driver")
    done = sql.add_trip(rider["id"], other["id"], status="COMPLETED")
    taken = sql.add_trip(rider["id"], other["id"], status="STARTED")
    sql.execute("UPDATE taxi_trip SET version = 4 WHERE id = %s", (uuid.UUID(done).hex,))
    sql.execute("UPDATE taxi_trip SET version = 2 WHERE id = %s", (uuid.UUID(taken).hex,))

    async def scenario():
        d = await connect(live.base, driver["access"], protocol=2)
        await send(d, "resume", {"trips": {done: 3, taken: 1}})
        got = [await recv(d), await recv(d)]
        assert await recv(d) == {"type": "resume.done", "data": {"sent": 2}}
        await d.close()
        return got

    got = live.run(scenario())
    assert {(m["data"]["id"], m["data"]["status"], m["data"]["version"]) for m in got} == {
        (done, "COMPLETED", 4),
        (taken, "STARTED", 2),
    }
    # Not this driver's trips: what became of them, not who rides or drives or where the car is.
    assert all(m["data"]["rider"] is m["data"]["driver"] is m["data"]["driver_location"] is None for m in got)


def test_a_resuming_driver_gets_the_requests_it_could_accept_unless_busy(live, sql):
    rider = live.account("rider@example.com")
    other = live.account("other@example.com")
    free = live.account("free@example.com", "driver")
    busy = live.account("busy@example.com", "driver")
    request = sql.add_trip(rider["id"])
    driving = sql.add_trip(other["id"], busy["id"], status="IN_PROGRESS")

    async def scenario():
        f = await connect(live.base, free["access"], protocol=2)
        b = await connect(live.base, busy["access"], protocol=2)
        await send(f, "resume", {"trips": {}})
        free_got = [await recv(f), await recv(f)]
        await send(b, "resume", {"trips": {}})
        busy_got = [await recv(b), await recv(b)]
        # Listed and current: not sent again.
        listed = await ask(f, "resume", {"trips": {request: 1}})
        for ws in (f, b):
            await ws.close()
        return free_got, busy_got, listed

    free_got, busy_got, listed = live.run(scenario())
    assert free_got[0]["data"]["id"] == request and free_got[1] == {"type": "resume.done", "data": {"sent": 1}}
    assert busy_got[0]["data"]["id"] == driving and busy_got[1] == {"type": "resume.done", "data": {"sent": 1}}
    assert listed == {"type": "resume.done", "data": {"sent": 0}}


def test_resume_input_is_checked(live):
    rider = live.account("rider@example.com")

    async def scenario():
        r = await connect(live.base, rider["access"], protocol=2)
        answers = [
            await ask(r, "resume", {"trips": []}),
            await ask(r, "resume", {"trips": {"nope": 1}}),
            await ask(r, "resume", {"trips": {str(uuid.uuid4()): -1}}),
            await ask(r, "resume", {"trips": {str(uuid.uuid4()): 1}}),  # unknown trips are simply not sent
        ]
        v1 = await connect(live.base, rider["access"])
        answers.append(await ask(v1, "resume", {"trips": {}}))
        await r.close()
        await v1.close()
        return answers

    answers = live.run(scenario())
    assert [a["data"].get("code") for a in answers[:3]] == ["invalid", "invalid", "invalid"]
    assert answers[3] == {"type": "resume.done", "data": {"sent": 0}}
    assert answers[4]["data"]["code"] == "unknown_type"


def test_a_driver_who_hands_back_over_http_hears_no_more_of_the_trip(live):
    rider = live.account("rider@example.com")
    first, second = (live.account(f"{n}@example.com", "driver") for n in ("first", "second"))

    async def scenario():
        r = await connect(live.base, rider["access"], protocol=2)
        d1 = await connect(live.base, first["access"], protocol=2)
        d2 = await connect(live.base, second["access"], protocol=2)
        trip = (await ask(r, "create.trip", trip_request()))["data"]
        await recv(d1)
        await recv(d2)
        await ask(d1, "update.trip", step(trip, "STARTED"))
        await recv(d2)
        await recv(r)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{live.client.port}") as http:
            resp = await http.post(f"/api/trip/{trip['id']}/cancel/", headers=bearer(first["access"]))
        assert resp.status_code == 200 and resp.json()["status"] == "REQUESTED"
        assert (await recv(d1))["data"]["version"] == 3  # its own socket hears the hand-back, once
        assert (await recv(d2))["data"]["version"] == 3 and (await recv(r))["data"]["version"] == 3
        taken = await ask(d2, "update.trip", step(trip, "STARTED"))
        assert await recv(d1) == taken  # the taken notice, as to any driver who held the request
        await ask(d2, "update.trip", step(trip, "IN_PROGRESS"))
        await send(d1, "update.location", {"lat": 52.5, "lng": 13.4})
        assert (await recv(r))["data"]["status"] == "STARTED" and (await recv(r))["data"]["status"] == "IN_PROGRESS"
        assert await silent(d1)  # no longer in the trip's group: nothing of the new driver's trip
        assert await silent(r)  # and the old driver's positions do not reach the rider
        for ws in (r, d1, d2):
            await ws.close()

    live.run(scenario())
