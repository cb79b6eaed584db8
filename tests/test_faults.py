"""Faults with real servers: PostgreSQL restarted under load. (Redis outages: test_realtime_processes.)"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from tests.conftest import REDIS_URL, SECRET
from tests.servers import ROOT, TIMEOUT_SCALE, PrivatePostgres, ServerProcess
from tests.support import PASSWORD
from tests.wsclient import ask, connect, trip_request


def call(url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict | list]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode() if body is not None else None, headers={"Content-Type": "application/json"}
    )
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


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
    env = {
        "TAXI_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{private_pg.port}/taxi",
        "TAXI_REDIS_URL": REDIS_URL,
        "TAXI_REDIS_PREFIX": f"taxi_test_{tmp_path.name}:",
        "TAXI_SECRET_KEY": SECRET,
        "TAXI_BCRYPT_ROUNDS": "4",
    }
    subprocess.run(
        [sys.executable, "-m", "taxi", "migrate"],
        cwd=ROOT,
        env={**env, "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )
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
        while True:
            status, body = call(f"{server.url}/api/trip/", token=access)
            if status == 200:
                break
            assert status == 503, (status, body)
            assert time.monotonic() - started < 15 * TIMEOUT_SCALE, "never recovered"
            time.sleep(0.1)
        recovery = time.monotonic() - started
        # Once one request succeeds, the pool is healthy: everything works again.
        for _ in range(10):
            assert call(f"{server.url}/api/trip/", token=access) == (200, [])
    assert "Traceback" not in server.output(), server.output()
    print(f"recovered {recovery:.2f} s after PostgreSQL came back")
