"""``GET /metrics`` on real multi-worker servers: counts a trip over every worker, keeps a killed worker's counts,
and is closed (404, or 401 without the token) unless the operator opened it."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import urllib.request

from taxiload.harness import ServerProcess, call, worker_pids
from tests.servers import server_env
from tests.support import PASSWORD, eventually_sync
from tests.wsclient import ask, connect, recv, trip_request

TOKEN = "scrape-me-0123456789"


def scrape(server: ServerProcess, token: str | None = TOKEN) -> tuple[int, str]:
    request = urllib.request.Request(f"{server.url}/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-z_]+)(?:\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'([a-z_]+)="([^"]*)"', match.group(2) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


def account(server: ServerProcess, name: str, group: str) -> str:
    body = {"username": name, "password1": PASSWORD, "password2": PASSWORD, "group": group}
    assert call(f"{server.url}/api/sign_up/", body)[0] == 201
    status, tokens = call(f"{server.url}/api/log_in/", {"username": name, "password": PASSWORD})
    assert status == 200
    return str(tokens["access"])


async def trip(server: ServerProcess, rider: str, driver: str) -> str:
    """A whole trip over sockets, and a scrape while both sockets are open."""
    async with await connect(server.ws_url, rider) as r, await connect(server.ws_url, driver) as d:
        created = await ask(r, "create.trip", trip_request())
        trip_id = created["data"]["id"]
        assert (await recv(d))["data"]["id"] == trip_id
        for status in ("STARTED", "IN_PROGRESS", "COMPLETED"):
            reply = await ask(d, "update.trip", {**created["data"], "status": status, "driver": None})
            assert reply["data"]["status"] == status, reply
            assert (await recv(r))["data"]["status"] == status
        await ask(r, "no.such.type")
        return (await asyncio.to_thread(scrape, server))[1]


def test_metrics_count_a_trip_over_every_worker_and_keep_a_killed_workers_counts(pg_database_url, tmp_path):
    env = server_env(pg_database_url, tmp_path, TAXI_METRICS="1", TAXI_METRICS_TOKEN=TOKEN)
    with ServerProcess(env, workers=2) as server:
        assert scrape(server, token=None)[0] == 401
        assert scrape(server, token="wrong")[0] == 401
        rider, driver = account(server, "mr@example.com", "rider"), account(server, "md@example.com", "driver")
        during = asyncio.run(trip(server, rider, driver))
        assert value(during, "taxi_ws_open_sockets") == 2, during
        assert value(during, "taxi_ws_open_sockets", protocol="1") == 2
        assert value(during, "taxi_ws_frames_total", direction="in", type="create.trip") == 1
        assert value(during, "taxi_ws_frames_total", direction="in", type="update.trip") == 3
        assert value(during, "taxi_ws_frames_total", direction="in", type="other") == 1
        # Each update reaches the driver (answer) and the rider (broadcast); the request reached rider and driver.
        assert value(during, "taxi_ws_frames_total", direction="out", type="echo.message") >= 2 + 2 + 6
        assert value(during, "taxi_ws_frames_total", direction="out", type="error") == 1
        assert value(during, "taxi_broadcasts_published_total") >= 4
        assert value(during, "taxi_broadcasts_delivered_total") >= 4
        assert value(during, "taxi_broadcast_publish_failures_total") == 0
        assert value(during, "taxi_http_requests_total", route="/api/sign_up", method="POST", status="201") == 2
        assert value(during, "taxi_http_requests_total", route="/api/log_in", status="200") == 2
        assert value(during, "taxi_http_request_duration_seconds_count", route="/api/log_in") == 2
        assert "taxi_db_pool_connections" in during and "taxi_broker_reconnects_total" in during
        # Both workers sample their loop every 10 ms from the start: by now hundreds of samples.
        assert value(during, "taxi_event_loop_lag_seconds_count") >= 100
        assert value(during, "taxi_event_loop_blocked_seconds_count") == value(
            during, "taxi_event_loop_lag_seconds_count"
        )

        # Spread requests over both workers, then kill one: what it counted stays counted.
        for _ in range(40):
            assert call(f"{server.url}/api/health/")[0] == 200
        before = value(scrape(server)[1], "taxi_http_requests_total", route="/api/health")
        assert before >= 40
        assert server.proc is not None
        victim = worker_pids(server.proc.pid)[0]
        os.kill(victim, signal.SIGKILL)
        eventually_sync(lambda: victim not in worker_pids(server.proc.pid), "the worker is gone")  # type: ignore[union-attr]
        after = scrape(server)[1]
        assert value(after, "taxi_http_requests_total", route="/api/health") >= before
        assert value(after, "taxi_ws_open_sockets") == 0  # the trip's sockets closed; the dead worker's are gone
        assert call(f"{server.url}/api/nope")[0] == 404
        assert value(scrape(server)[1], "taxi_http_requests_total", route="unmatched", status="404") == 1


def test_metrics_are_off_unless_asked_for(tmp_path):
    env = {"TAXI_DATABASE_URL": f"sqlite:///{tmp_path}/m.sqlite3", "TAXI_REDIS_URL": "", "TAXI_BCRYPT_ROUNDS": "4"}
    with ServerProcess(env) as server:
        assert scrape(server, token=None)[0] == 404
    env["TAXI_METRICS"] = "1"  # no token: open to whoever reaches it (behind the operator's own network rules)
    with ServerProcess(env) as server:
        status, text = scrape(server, token=None)
        assert status == 200 and "taxi_http_requests_total" in text
