"""Nearby dispatch across processes: one server with two workers and a second server, on one PostgreSQL and
one Redis. Positions sent to one process count on every other; a request reaches exactly the drivers in range
wherever their sockets are; the car's moves cross to the rider's server."""

from __future__ import annotations

import asyncio
import secrets

import pytest

from taxi.geo import Point
from taxiload.harness import ServerProcess, call
from tests.processes.test_realtime_processes import account, env_for
from tests.services.test_presence import destination
from tests.support import eventually
from tests.wsclient import ask, connect, recv, send, silent, trip_request

PICK_UP = Point(48.8566, 2.3522)

pytestmark = pytest.mark.slow


def where(metres: float, bearing: float) -> dict:
    point = destination(PICK_UP, metres, bearing)
    return {"lat": point.lat, "lng": point.lng}


def test_a_request_reaches_the_drivers_in_range_on_every_worker_and_server(pg_database_url, tmp_path):
    env = env_for(pg_database_url, tmp_path, prefix=f"taxi_test_{secrets.token_hex(4)}:")
    with ServerProcess(env, workers=2) as a, ServerProcess(env) as b:
        rider = account(b.url, "rider@example.com", "rider")
        near = [account(a.url, f"near{i}@example.com", "driver") for i in range(8)]
        near_b = [account(b.url, f"nearb{i}@example.com", "driver") for i in range(2)]
        far = [account(a.url, f"far{i}@example.com", "driver") for i in range(3)]

        def on_map() -> int:
            status, shown = call(
                f"{b.url}/api/drivers/nearby/?lat={PICK_UP.lat}&lng={PICK_UP.lng}", token=rider["access"]
            )
            assert status == 200, shown
            return len(shown)

        async def scenario():
            # Eight sockets on a two-worker server: the kernel spreads them over both workers.
            near_socks = [await connect(a.ws_url, d["access"], protocol=2) for d in near]
            near_socks += [await connect(b.ws_url, d["access"], protocol=2) for d in near_b]
            far_socks = [await connect(a.ws_url, d["access"], protocol=2) for d in far]
            for n, sock in enumerate(near_socks):
                await send(sock, "update.location", where(4900, n * 36))
            for n, sock in enumerate(far_socks):
                await send(sock, "update.location", where(5100, n * 120))
            await eventually(on_map, "every near driver on the rider's map", until=lambda count: count == 10)
            r = await connect(b.ws_url, rider["access"], protocol=2)
            trip = (
                await ask(r, "create.trip", trip_request(pick_up_location={"lat": PICK_UP.lat, "lng": PICK_UP.lng}))
            )["data"]
            for sock in near_socks:
                assert (await recv(sock))["data"]["id"] == trip["id"]
            for sock in far_socks:
                assert await silent(sock, 0.2)
            taker, *others = near_socks
            accepted = await ask(taker, "update.trip", {**trip, "status": "STARTED"})
            assert accepted["data"]["driver"]["id"] == near[0]["id"]
            assert (await recv(r))["data"]["status"] == "STARTED"  # crossed from server a to server b
            for sock in others:
                assert (await recv(sock))["data"]["status"] == "STARTED"
            await asyncio.sleep(1.1)  # the interval since the taker's last fix
            await send(taker, "update.location", {**where(3000, 0), "heading": 5.0})
            move = await recv(r)
            assert move["type"] == "driver.location" and move["data"]["trip_id"] == trip["id"]
            assert move["data"]["lat"] == where(3000, 0)["lat"]
            for sock in far_socks:
                assert await silent(sock, 0.1)
            for sock in (*near_socks, *far_socks, r):
                await sock.close()

        asyncio.run(scenario())
