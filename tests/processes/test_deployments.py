"""Two deployments on one Redis server: they must never hear each other, whatever their prefix."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from taxiload.database import ScratchDatabase
from taxiload.harness import ServerProcess, call
from tests.support import PASSWORD
from tests.wsclient import ask, connect, recv, silent, trip_request

REDIS_SERVER = "redis://127.0.0.1:6379"
# Database numbers no other test uses: these deployments keep the default prefix, so their keys are plain taxi:*.
DEPLOYMENT_DBS = (12, 13)


def account(base: str, username: str, group: str) -> dict:
    body = {"username": username, "password1": PASSWORD, "password2": PASSWORD, "group": group}
    status, user = call(f"{base}/api/sign_up/", body)
    assert status == 201, user
    return user | call(f"{base}/api/log_in/", {"username": username, "password": PASSWORD})[1]


@pytest.fixture
def deployments(tmp_path) -> Iterator[list[ServerProcess]]:
    """Two servers, each with its own PostgreSQL database, secret and Redis database, both on the default prefix."""
    servers: list[ServerProcess] = []
    with (
        ScratchDatabase("deploy", tmp_path / "a", redis_url=f"{REDIS_SERVER}/12", drop_keys=False) as a,
        ScratchDatabase("deploy", tmp_path / "b", redis_url=f"{REDIS_SERVER}/13", drop_keys=False) as b,
    ):
        try:
            for scratch in (a, b):
                env = scratch.env | {"TAXI_REDIS_PREFIX": "taxi:"}
                servers.append(ServerProcess(env).start())
            yield servers
        finally:
            for server in servers:
                server.close()
            for number in DEPLOYMENT_DBS:
                client = redis.Redis.from_url(f"{REDIS_SERVER}/{number}")
                if keys := list(client.scan_iter(match="taxi:*", count=1000)):
                    client.delete(*keys)
                client.close()


def test_deployments_on_two_redis_databases_never_hear_each_other(deployments):
    a, b = deployments
    driver_a = account(a.url, "driver@example.com", "driver")
    driver_b = account(b.url, "driver@example.com", "driver")
    rider_b = account(b.url, "rider@example.com", "rider")

    async def scenario():
        async with (
            await connect(a.ws_url, driver_a["access"]) as da,
            await connect(b.ws_url, driver_b["access"]) as db,
            await connect(b.ws_url, rider_b["access"]) as rb,
        ):
            request = await ask(rb, "create.trip", trip_request("B's secret pick-up", "B's secret drop-off"))
            assert request["data"]["rider"]["username"] == "rider@example.com"
            assert await recv(db) == request  # B's own driver hears it
            assert await silent(da, 1.0)  # A's driver never does
            await ask(da, "echo.message", "still here")  # and A's socket is fine

    asyncio.run(scenario())
