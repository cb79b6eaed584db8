"""Faults with real servers: PostgreSQL restarted under load. (Redis outages: test_realtime_processes.)"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import time
from pathlib import Path

import pytest
import websockets

from taxi.config import DatabaseURL
from taxiload.harness import PrivatePostgres, ServerProcess, call, worker_pids
from tests.servers import migrate_cli, server_env
from tests.support import PASSWORD, eventually, eventually_sync
from tests.wsclient import ask, connect, recv, trip_request


def pg_url_like(port: int) -> DatabaseURL:
    return DatabaseURL(backend="postgresql", name="taxi", host="127.0.0.1", port=port, user="postgres")


@pytest.fixture
def private_pg():
    pg = PrivatePostgres()
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()


def test_postgresql_restart_gives_503_then_recovers_without_a_restart(private_pg, tmp_path):
    private_pg.create_database("taxi")
    env = server_env(pg_url_like(private_pg.port), tmp_path)
    migrate_cli(env)
    with ServerProcess(env, workers=2) as server:
        assert (
            call(
                f"{server.url}/api/sign_up/",
                {"username": "r@example.com", "password1": PASSWORD, "password2": PASSWORD, "group": "rider"},
            )[0]
            == 201
        )
        _, tokens = call(f"{server.url}/api/log_in/", {"username": "r@example.com", "password": PASSWORD})
        access = tokens["access"]
        assert call(f"{server.url}/api/trip/", token=access) == (200, [])

        async def during_outage():
            async with await connect(server.ws_url, access) as ws:
                private_pg.stop()
                reply = await ask(ws, "create.trip", trip_request())
                assert reply["type"] == "error" and reply["data"]["code"] == "unavailable", reply
                await ask(ws, "echo.message", "still open")  # the socket itself keeps working
            # A new socket cannot be authenticated meanwhile: a 503 at the handshake, not an open-then-drop.
            with pytest.raises(websockets.exceptions.InvalidStatus) as err:
                await connect(server.ws_url, access)
            assert err.value.response.status_code == 503
            return reply

        asyncio.run(during_outage())
        for _ in range(4):  # every pooled connection of both workers is dead now
            status, body = call(f"{server.url}/api/trip/", token=access)
            assert status == 503 and set(body) == {"detail"}, (status, body)
        status, body = call(f"{server.url}/api/log_in/", {"username": "r@example.com", "password": PASSWORD})
        assert status == 503, (status, body)
        assert call(f"{server.url}/api/health/") == (200, {"status": "ok"})  # liveness does not need the database

        private_pg.start()
        started = time.monotonic()

        def trips() -> int:
            status, body = call(f"{server.url}/api/trip/", token=access)
            assert status in (200, 503), (status, body)  # unavailable until it recovers, then served
            return status

        eventually_sync(
            trips, "the API serves trips again", until=lambda status: status == 200, timeout=15, interval=0.1
        )
        recovery = time.monotonic() - started
        # Once one request succeeds, the pool is healthy: everything works again.
        for _ in range(10):
            assert call(f"{server.url}/api/trip/", token=access) == (200, [])
    assert "Traceback" not in server.output(), server.output()
    print(f"recovered {recovery:.2f} s after PostgreSQL came back")


def socket_owners(pids: list[int], port: int) -> dict[int, int]:
    """Which of ``pids`` holds each IPv4 connection to ``port``: client port -> pid (read from /proc)."""
    inodes = {}
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue  # closed meanwhile
            if link.startswith("socket:["):
                inodes[link[len("socket:[") : -1]] = pid
    owners = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
            owners[int(remote.rsplit(":", 1)[1], 16)] = inodes[inode]
    return owners


def test_a_killed_worker_loses_only_its_sockets_and_they_come_back(pg_database_url, tmp_path):
    env = server_env(pg_database_url, tmp_path)
    with ServerProcess(env, workers=2) as server:
        riders = []
        for i in range(12):
            call(
                f"{server.url}/api/sign_up/",
                {"username": f"r{i}", "password1": PASSWORD, "password2": PASSWORD, "group": "rider"},
            )
            riders.append(call(f"{server.url}/api/log_in/", {"username": f"r{i}", "password": PASSWORD})[1])
        call(
            f"{server.url}/api/sign_up/",
            {"username": "d", "password1": PASSWORD, "password2": PASSWORD, "group": "driver"},
        )
        driver = call(f"{server.url}/api/log_in/", {"username": "d", "password": PASSWORD})[1]
        workers = worker_pids(server.proc.pid)
        assert len(workers) == 2, workers

        async def scenario():
            d = await connect(server.ws_url, driver["access"])
            socks, trips = [], []
            # All at once: a worker that is idle takes every connection made one after another, so sequential
            # connects can all land on one worker; simultaneous ones are spread over both.
            opened = await asyncio.gather(*(connect(server.ws_url, rider["access"]) for rider in riders))
            # A busy worker may still take them all: reconnect riders one by one until both workers hold some.
            for attempt in range(60):
                owners = socket_owners(workers, server.port)
                if {owners.get(ws.local_address[1]) for ws in opened} >= set(workers):
                    break
                i = attempt % len(opened)
                await opened[i].close()
                opened[i] = await connect(server.ws_url, riders[i]["access"])
                await asyncio.sleep(0.05)
            for ws in opened:
                trip = (await ask(ws, "create.trip", trip_request()))["data"]
                if not trips:  # once it drives a trip the driver is busy, and hears no more requests
                    await recv(d)
                await ask(d, "update.trip", {"id": trip["id"], "status": "STARTED"})
                await recv(ws)
                socks.append(ws)
                trips.append(trip["id"])
            os.kill(workers[0], signal.SIGKILL)
            # Sockets on the killed worker drop; the others stay open and working.
            survivors, dropped = [], []
            for i, ws in enumerate(socks):
                try:
                    await ask(ws, "echo.message", "alive?")
                    survivors.append(i)
                except (websockets.exceptions.ConnectionClosed, TimeoutError, OSError):
                    dropped.append(i)
            # Every rider (re)connects, to whichever worker takes it, and hears the driver's next step.
            for i in dropped:
                await socks[i].close()
                socks[i] = await eventually(
                    functools.partial(connect, server.ws_url, riders[i]["access"]),
                    f"rider {i} connects again",
                    interval=0.1,
                    retry_on=(OSError, websockets.exceptions.InvalidStatus, websockets.exceptions.ConnectionClosed),
                )
            try:
                await ask(d, "echo.message", "alive?")
            except (websockets.exceptions.ConnectionClosed, TimeoutError, OSError):
                await d.close()
                d = await connect(server.ws_url, driver["access"])
            for ws, trip_id in zip(socks, trips, strict=True):
                reply = await ask(d, "update.trip", {"id": trip_id, "status": "IN_PROGRESS"})
                assert reply["data"]["status"] == "IN_PROGRESS", reply
                assert (await recv(ws))["data"]["id"] == trip_id
            for ws in (*socks, d):
                await ws.close()
            return survivors, dropped

        survivors, dropped = asyncio.run(scenario())
        assert survivors and dropped, (survivors, dropped)  # sockets were spread over both workers
        # HTTP keeps being served throughout.
        for _ in range(10):
            assert call(f"{server.url}/api/health/") == (200, {"status": "ok"})
