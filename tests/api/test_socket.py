"""The /taxi/ WebSocket against a real server: the reference's WebSocket tests, every error, the transition
table, identity spoofing, the acceptance race, cleanup and slow consumers.

Each test runs twice: on PostgreSQL with the Redis broker, and on SQLite with the in-process broker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid

import pytest
import redis.asyncio as aioredis
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support import SyncDB, eventually
from tests.wsclient import WAIT, Live, RawSocket, ask, connect, recv, send, silent, still_open, trip_request


@pytest.fixture
def settings(deployment):
    return deployment


@pytest.fixture
def sql(deployment):
    return SyncDB(deployment.database)


@pytest.fixture
def live(client):
    return Live(client)


@pytest.fixture
def rider(live):
    return live.account("rider@example.com", "rider")


@pytest.fixture
def driver(live):
    return live.account("driver@example.com", "driver")


def test_rider_and_driver_can_connect_and_echo(live, rider, driver):
    async def scenario():
        for user in (rider, driver):
            async with await connect(live.base, user["access"]) as ws:
                assert await ask(ws, "echo.message", "This is a test message.") == {
                    "type": "echo.message",
                    "data": "This is a test message.",
                }

    live.run(scenario())


def test_trailing_slash_is_optional(live, rider):
    async def scenario():
        async with websockets.connect(f"{live.base}/taxi?token={rider['access']}") as ws:
            await still_open(ws)

    live.run(scenario())


def test_handshake_is_refused_with_401_for_every_bad_token(live, rider, sql):
    async def refused(query: str) -> int:
        with pytest.raises(InvalidStatus) as err:
            await websockets.connect(f"{live.base}/taxi/{query}", open_timeout=WAIT)
        return err.value.response.status_code

    async def scenario():
        for query in ("", "?token=", "?token=garbage", f"?token={rider['refresh']}", f"?token={rider['access']}x"):
            assert await refused(query) == 401, query
        sql.execute("UPDATE taxi_user SET is_active = %s WHERE id = %s", (False, rider["id"]))
        assert await refused(f"?token={rider['access']}") == 401

    live.run(scenario())


def test_request_trip_reaches_the_rider_and_every_driver_and_is_stored_first(live, rider, driver, sql):
    driver2 = live.account("driver2@example.com", "driver")

    async def scenario():
        async with (
            await connect(live.base, driver["access"]) as d1,
            await connect(live.base, driver2["access"]) as d2,
            await connect(live.base, rider["access"]) as r,
        ):
            reply = await ask(r, "create.trip", trip_request("123 Main St", "456 Elm St", rider=rider["id"]))
            assert reply["type"] == "echo.message"
            trip = reply["data"]
            assert trip["status"] == "REQUESTED" and trip["driver"] is None
            assert trip["rider"]["id"] == rider["id"] and trip["rider"]["username"] == "rider@example.com"
            assert trip["pick_up_address"] == "123 Main St" and trip["drop_off_address"] == "456 Elm St"
            assert await recv(d1) == reply
            assert await recv(d2) == reply
            assert await silent(r)  # the rider is answered once, not also by a broadcast
            return trip

    trip = live.run(scenario())
    assert sql.trip_status(trip["id"]) == ("REQUESTED", None)
    # Exactly what the HTTP API returns for that trip.
    assert live.get(f"/api/trip/{trip['id']}/", rider["access"]).json == trip


def test_a_rider_without_sockets_of_drivers_still_gets_their_trip(live, rider):
    async def scenario():
        async with await connect(live.base, rider["access"]) as r:
            reply = await ask(r, "create.trip", trip_request())
            assert reply["data"]["status"] == "REQUESTED"

    live.run(scenario())


def test_whole_lifecycle_reaches_the_rider_and_the_driver_once_each(live, app, rider, driver, sql):
    async def scenario():
        async with await connect(live.base, rider["access"]) as r, await connect(live.base, driver["access"]) as d:
            trip = (await ask(r, "create.trip", trip_request()))["data"]
            assert (await recv(d))["data"]["id"] == trip["id"]
            for status in ("STARTED", "IN_PROGRESS", "COMPLETED"):
                # The reference client sends the whole trip back with the driver's and the rider's ids.
                sent = {**trip, "status": status, "driver": driver["id"], "rider": rider["id"]}
                reply = await ask(d, "update.trip", sent)
                assert reply["type"] == "echo.message"
                assert reply["data"]["status"] == status and reply["data"]["driver"]["id"] == driver["id"]
                assert await recv(r) == reply
                trip = reply["data"]
            assert await silent(d) and await silent(r)
            # Nothing more happens to a completed trip: its group is gone from the worker (no member, no channel).
            assert f"trip:{trip['id']}" not in app.ctx.relay.hub.members
            return trip["id"]

    trip_id = live.run(scenario())
    assert sql.trip_status(trip_id) == ("COMPLETED", driver["id"])


def test_other_drivers_see_that_a_trip_was_taken(live, rider, driver):
    other = live.account("other-driver@example.com", "driver")

    async def scenario():
        async with (
            await connect(live.base, rider["access"]) as r,
            await connect(live.base, driver["access"]) as d,
            await connect(live.base, other["access"]) as o,
        ):
            trip = (await ask(r, "create.trip", trip_request()))["data"]
            await recv(d), await recv(o)
            taken = await ask(d, "update.trip", {"id": trip["id"], "status": "STARTED"})
            assert (await recv(o)) == taken and taken["data"]["status"] == "STARTED"
            assert await recv(r) == taken
            # Later steps concern the trip's group only, not every driver.
            await ask(d, "update.trip", {"id": trip["id"], "status": "IN_PROGRESS"})
            assert (await recv(r))["data"]["status"] == "IN_PROGRESS"
            assert await silent(o)

    live.run(scenario())


def test_reconnecting_sockets_rejoin_their_open_trips(live, rider, driver):
    async def scenario():
        async with await connect(live.base, rider["access"]) as r:
            trip = (await ask(r, "create.trip", trip_request()))["data"]
        async with await connect(live.base, driver["access"]) as d:
            await ask(d, "update.trip", {"id": trip["id"], "status": "STARTED"})
        # Both come back on new sockets: the rider hears the driver's next step without asking for anything.
        async with await connect(live.base, rider["access"]) as r, await connect(live.base, driver["access"]) as d:
            reply = await ask(d, "update.trip", {"id": trip["id"], "status": "IN_PROGRESS"})
            heard = await recv(r)
            if heard["data"]["status"] == "STARTED":  # the acceptance's broadcast may still have been on its way
                heard = await recv(r)
            assert heard == reply
            await ask(d, "update.trip", {"id": trip["id"], "status": "COMPLETED"})
            await recv(r)
        # A COMPLETED trip's group is not rejoined.
        async with await connect(live.base, rider["access"]) as r:
            assert await silent(r)

    live.run(scenario())


@pytest.mark.parametrize(
    "raw,code",
    [
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_message"),
        ('"text"', "invalid_message"),
        ("{}", "invalid_message"),
        ('{"type": 5}', "invalid_message"),
        ('{"type": "teleport.trip", "data": {}}', "unknown_type"),
        ('{"type": "create.trip", "data": "A to B"}', "invalid"),
        ('{"type": "create.trip", "data": {"pick_up_address": "A"}}', "invalid"),
        ('{"type": "create.trip", "data": {"pick_up_address": "", "drop_off_address": "B"}}', "invalid"),
        (json.dumps({"type": "create.trip", "data": trip_request("A" * 256)}), "invalid"),
        (json.dumps({"type": "create.trip", "data": trip_request(7)}), "invalid"),
        (
            '{"type": "create.trip", "data": {"pick_up_address": "A", "drop_off_address": "B", "rider": 999999}}',
            "forbidden",
        ),
        ('{"type": "create.trip", "data": {"pick_up_address": "A", "drop_off_address": "B", "rider": "x"}}', "invalid"),
        ('{"type": "update.trip", "data": {"id": "x", "status": "STARTED"}}', "forbidden"),  # riders cannot
        ("[" * 5000 + "]" * 5000, "invalid_json"),
    ],
)
def test_bad_rider_messages_get_an_error_and_the_socket_keeps_working(live, rider, raw, code, sql):
    async def scenario():
        async with await connect(live.base, rider["access"]) as r:
            await r.send(raw)
            reply = await recv(r)
            assert reply["type"] == "error" and reply["data"]["code"] == code, reply
            assert isinstance(reply["data"]["detail"], str) and reply["data"]["detail"]
            await still_open(r)

    live.run(scenario())
    assert sql.fetch("SELECT COUNT(*) FROM taxi_trip")[0][0] == 0


def test_binary_frames_get_an_error(live, rider):
    async def scenario():
        async with await connect(live.base, rider["access"]) as r:
            await r.send(b"\x00\x01")
            assert (await recv(r))["data"]["code"] == "invalid_message"
            await still_open(r)

    live.run(scenario())


def test_bad_driver_messages_get_an_error(live, rider, driver, sql):
    other_rider = live.account("other-rider@example.com")
    mine = sql.add_trip(rider["id"])
    theirs_in_progress = sql.add_trip(
        other_rider["id"], live.account("d2@example.com", "driver")["id"], status="IN_PROGRESS"
    )
    cases = [
        ({"type": "create.trip", "data": trip_request()}, "forbidden"),
        ({"type": "update.trip", "data": {"id": "not-a-uuid", "status": "STARTED"}}, "invalid"),
        ({"type": "update.trip", "data": {"status": "STARTED"}}, "invalid"),
        ({"type": "update.trip", "data": {"id": mine, "status": "FLYING"}}, "invalid"),
        ({"type": "update.trip", "data": {"id": mine}}, "invalid"),
        ({"type": "update.trip", "data": [mine]}, "invalid"),
        ({"type": "update.trip", "data": {"id": str(uuid.uuid4()), "status": "STARTED"}}, "not_found"),
        ({"type": "update.trip", "data": {"id": theirs_in_progress, "status": "COMPLETED"}}, "not_found"),
        # Identity spoofing: the payload may not name another driver or the wrong rider.
        ({"type": "update.trip", "data": {"id": mine, "status": "STARTED", "driver": 424242}}, "forbidden"),
        ({"type": "update.trip", "data": {"id": mine, "status": "STARTED", "rider": other_rider["id"]}}, "forbidden"),
        ({"type": "update.trip", "data": {"id": mine, "status": "STARTED", "driver": {"id": 424242}}}, "forbidden"),
        # Ids that only look like numbers must not crash anything.
        ({"type": "update.trip", "data": {"id": mine, "status": "STARTED", "rider": "\u00b2"}}, "invalid"),
        ({"type": "update.trip", "data": {"id": mine, "status": "STARTED", "rider": "9" * 5000}}, "invalid"),
        ({"type": "update.trip", "data": {"id": mine, "status": "STARTED", "rider": 2**63}}, "invalid"),
        ({"type": "update.trip", "data": {"id": mine, "status": "STARTED", "driver": -1}}, "invalid"),
    ]

    async def scenario():
        async with await connect(live.base, driver["access"]) as d:
            for message, code in cases:
                reply = await ask(d, message["type"], message["data"])
                assert reply["type"] == "error" and reply["data"]["code"] == code, (message, reply)
            await still_open(d)

    live.run(scenario())
    assert sql.trip_status(mine) == ("REQUESTED", None)


def test_transition_table(live, rider, driver, sql):
    other = live.account("other-driver@example.com", "driver")
    trip = sql.add_trip(rider["id"])
    steps = [
        (driver, "IN_PROGRESS", "invalid_transition"),  # REQUESTED -> IN_PROGRESS skips a step
        (driver, "COMPLETED", "invalid_transition"),
        (driver, "REQUESTED", "invalid_transition"),
        (driver, "STARTED", None),
        (driver, "STARTED", "invalid_transition"),
        (other, "STARTED", "trip_unavailable"),  # taken
        (other, "IN_PROGRESS", "not_found"),  # not theirs: invisible to them
        (driver, "COMPLETED", "invalid_transition"),
        (driver, "IN_PROGRESS", None),
        (driver, "STARTED", "invalid_transition"),  # no way back
        (driver, "COMPLETED", None),
        (driver, "COMPLETED", "invalid_transition"),
        (driver, "IN_PROGRESS", "invalid_transition"),
    ]

    async def scenario():
        socks = {
            driver["id"]: await connect(live.base, driver["access"]),
            other["id"]: await connect(live.base, other["access"]),
        }
        try:
            for who, status, code in steps:
                reply = await ask(socks[who["id"]], "update.trip", {"id": trip, "status": status})
                if code is None:
                    assert reply["type"] == "echo.message" and reply["data"]["status"] == status, reply
                else:
                    assert reply["type"] == "error" and reply["data"]["code"] == code, (who["username"], status, reply)
                    # The taken trip broadcast reached the other driver; drain what they heard.
                while True:
                    try:
                        msg = await asyncio.wait_for(socks[other["id"]].recv(), 0.05)
                    except TimeoutError:
                        break
                    assert json.loads(msg)["type"] == "echo.message"
        finally:
            for ws in socks.values():
                await ws.close()

    live.run(scenario())
    assert sql.trip_status(trip) == ("COMPLETED", driver["id"])


def test_ten_drivers_accepting_at_once_exactly_one_wins(live, rider, sql):
    drivers = [live.account(f"racer{i}@example.com", "driver") for i in range(10)]
    trip = sql.add_trip(rider["id"])

    async def scenario():
        socks = [await connect(live.base, d["access"]) for d in drivers]
        try:
            for ws in socks:
                await send(ws, "update.trip", {"id": trip, "status": "STARTED"})
            replies = []
            for ws in socks:
                # Each driver's own answer (the winner's acceptance may also reach the others).
                while True:
                    msg = await recv(ws)
                    if msg["type"] == "error" or (
                        msg["data"]["driver"]
                        and ws is socks[[d["id"] for d in drivers].index(msg["data"]["driver"]["id"])]
                    ):
                        replies.append(msg)
                        break
            return replies
        finally:
            for ws in socks:
                await ws.close()

    replies = live.run(scenario())
    winners = [r for r in replies if r["type"] == "echo.message"]
    losers = [r for r in replies if r["type"] == "error"]
    assert len(winners) == 1 and len(losers) == 9
    assert {r["data"]["code"] for r in losers} == {"trip_unavailable"}
    status, driver_id = sql.trip_status(trip)
    assert status == "STARTED" and driver_id == winners[0]["data"]["driver"]["id"]


def test_oversized_frame_closes_with_1009(live, rider):
    async def scenario():
        async with await connect(live.base, rider["access"], max_size=None) as r:
            await r.send(json.dumps({"type": "echo.message", "data": "x" * (64 * 1024 + 1)}))
            with pytest.raises(ConnectionClosed) as err:
                await asyncio.wait_for(r.recv(), WAIT)
            assert err.value.rcvd is not None and err.value.rcvd.code == 1009

    live.run(scenario())


def test_text_frame_that_is_not_utf8_closes_with_1007_and_leaves_its_groups(live, app, driver):
    async def scenario():
        raw = await RawSocket.open("127.0.0.1", live.client.port, f"/taxi/?token={driver['access']}")
        try:
            await raw.send_text('{"type": "echo.message", "data": "ready?"}')
            await eventually(lambda: app.ctx.relay.hub.members, "the socket joins", until=lambda m: "drivers" in m)
            # A fragmented message: a valid first frame, then a continuation that breaks the UTF-8.
            await raw.send_frame(b'{"type": "echo.message", "data": "caf' + b"\xc3", fin=False)
            await raw.send_frame(b'\x28"}', opcode=0x0)
            assert (await raw.read_until_closed(WAIT)) == (1, 1007)
        finally:
            raw.close()
        await eventually(lambda: app.ctx.relay.hub.members, "the socket leaves its groups", until=lambda m: m == {})

    live.run(scenario())


def test_disconnect_leaves_no_member_and_no_subscription_behind(live, app, settings, rider, driver):
    relay = app.ctx.relay

    async def subscribed(admin) -> set[str]:
        """Redis's own view: the channels of this server's groups that someone is subscribed to."""
        return set(await admin.pubsub_channels(relay.broker.channel("*")))

    async def scenario(admin):
        async with await connect(live.base, rider["access"]) as r, await connect(live.base, driver["access"]) as d:
            trip = (await ask(r, "create.trip", trip_request()))["data"]
            await recv(d)
            groups = {"drivers", f"trip:{trip['id']}"}
            assert set(relay.hub.members) == groups
            if admin is not None:
                assert set(relay.broker.subscribed_groups) == groups
                assert await subscribed(admin) == {relay.broker.channel(group) for group in groups}
        # The server notices the close within a few ms.
        await eventually(lambda: relay.hub.members, "both sockets leave their groups", until=lambda m: m == {})
        if admin is not None:
            assert relay.broker.subscribed_groups == []
            await eventually(lambda: subscribed(admin), "Redis drops every group channel", until=lambda c: c == set())
        names = {t.get_name() for t in asyncio.all_tasks()}
        assert not any(n.startswith("ws-writer-") for n in names), names

    async def with_redis_view():
        if settings.redis_url is None:  # the in-process broker: no Redis to ask
            return await scenario(None)
        admin = aioredis.from_url(settings.redis_url, decode_responses=True)
        try:
            return await scenario(admin)
        finally:
            await admin.aclose()

    live.run(with_redis_view())


def test_a_client_that_stops_reading_is_disconnected_without_delaying_others(deployment, tmp_path):
    from sanic_testing.reusable import ReusableClient

    from taxi.app import create_app
    from taxiload.harness import free_port

    # The stalled client sends faster than the rate limit allows: it must get its echoes, not rate_limited.
    settings = dataclasses.replace(deployment, ws_queue_size=8, ws_messages_per_s=100_000)
    app = create_app(settings, name=f"taxi_slow_{uuid.uuid4().hex[:6]}")
    with ReusableClient(app, port=free_port()) as client:
        live = Live(client)
        rider, driver = live.account("r@example.com"), live.account("d@example.com", "driver")
        slow = live.account("slow@example.com", "driver")

        def drivers() -> int:
            return len(app.ctx.relay.hub.members.get("drivers", ()))

        async def scenario():
            stalled = await RawSocket.open("127.0.0.1", client.port, f"/taxi/?token={slow['access']}")
            async with await connect(live.base, rider["access"]) as r, await connect(live.base, driver["access"]) as d:
                await still_open(d)
                # The raw socket's handler joins right after its handshake.
                await eventually(drivers, "the stalled driver joins the drivers", until=lambda n: n == 2)
                big = json.dumps({"type": "echo.message", "data": "y" * 50_000})
                sent = 0
                for _ in range(400):  # bounded: far more than the socket buffers and the queue can hold
                    try:
                        await stalled.send_text(big)
                    except (TimeoutError, ConnectionError):
                        break  # the server stopped reading from it
                    sent += 1
                    if drivers() < 2:
                        break
                await eventually(
                    drivers, f"the stalled driver is disconnected after {sent} frames", until=lambda n: n == 1
                )
                # Meanwhile everyone else is served promptly.
                loop = asyncio.get_running_loop()
                start = loop.time()
                trip = (await ask(r, "create.trip", trip_request()))["data"]
                assert (await recv(d))["data"]["id"] == trip["id"]
                assert loop.time() - start < 2 * WAIT / 5
                # The stalled client, reading again, gets its backlog and then the close: 1013, too slow.
                frames, code = await stalled.read_until_closed(WAIT)
                stalled.close()
                assert code == 1013, (frames, code)
                assert 0 < frames < sent

        live.run(scenario())


def test_a_user_deactivated_while_connected_can_act_no_more(live, rider, driver, sql):
    trip = sql.add_trip(rider["id"])

    async def scenario():
        async with await connect(live.base, rider["access"]) as r, await connect(live.base, driver["access"]) as d:
            sql.execute("UPDATE taxi_user SET is_active = %s WHERE id IN (%s, %s)", (False, rider["id"], driver["id"]))
            for ws, kind, data in (
                (r, "create.trip", trip_request()),
                (d, "update.trip", {"id": trip, "status": "STARTED"}),
            ):
                reply = await ask(ws, kind, data)
                assert reply["type"] == "error" and reply["data"]["code"] == "user_inactive", reply
                with pytest.raises(ConnectionClosed) as err:
                    await asyncio.wait_for(ws.recv(), WAIT)
                assert err.value.rcvd is not None and err.value.rcvd.code == 1008

    live.run(scenario())
    assert sql.fetch("SELECT COUNT(*) FROM taxi_trip")[0][0] == 1
    assert sql.trip_status(trip) == ("REQUESTED", None)
