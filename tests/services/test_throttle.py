"""Log-in brute force: attempts limited per username and per client address, shared across workers by Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis.asyncio as aioredis
from sanic_testing.reusable import ReusableClient

from taxi.app import create_app
from taxi.services.throttle import MemoryThrottle, RedisThrottle
from taxiload.harness import ServerProcess, call, free_port
from tests.servers import server_env
from tests.support import PASSWORD, sign_up


@pytest.fixture
def limited(deployment, tmp_path):
    settings = dataclasses.replace(deployment, login_attempts_per_user=3, login_attempts_per_address=6, login_window=60)
    app = create_app(settings, name=f"taxi_{secrets.token_hex(4)}")
    with ReusableClient(app, port=free_port()) as client:
        yield client


def attempt(client, username: str, password: str = "wrong-password"):
    return client.post("/api/log_in/", json={"username": username, "password": password})[1]


def test_a_username_is_locked_after_too_many_attempts(limited):
    sign_up(limited, "victim@example.com")
    assert [attempt(limited, "victim@example.com").status for _ in range(3)] == [401, 401, 401]
    locked = attempt(limited, "victim@example.com", PASSWORD)  # even the right password, for now
    assert locked.status == 429
    assert set(locked.json) == {"detail"}
    assert 1 <= int(locked.headers["retry-after"]) <= 60
    assert attempt(limited, "VICTIM@example.com").status == 429  # the same name in another case
    assert attempt(limited, "bystander@example.com").status == 401  # other accounts are unaffected


def test_sign_ups_are_limited_per_address(deployment):
    settings = dataclasses.replace(deployment, signups_per_address=3)
    app = create_app(settings, name=f"taxi_{secrets.token_hex(4)}")
    with ReusableClient(app, port=free_port()) as client:
        body = {"password1": PASSWORD, "password2": PASSWORD, "group": "rider"}
        statuses = [client.post("/api/sign_up/", json={**body, "username": f"u{i}"})[1].status for i in range(5)]
        assert statuses == [201, 201, 201, 429, 429]
        _, resp = client.post("/api/sign_up/", json={**body, "username": "u9"})
        assert set(resp.json) == {"detail"} and int(resp.headers["retry-after"]) >= 1


def test_one_address_is_limited_across_usernames(limited):
    statuses = [attempt(limited, f"user{i}@example.com").status for i in range(8)]
    assert statuses == [401] * 6 + [429] * 2


async def test_memory_throttle_windows_reset():
    throttle = MemoryThrottle()
    assert [await throttle.hit("k", 2, 1) for _ in range(3)] == [0, 0, 1]
    await asyncio.sleep(1.05)
    assert await throttle.hit("k", 2, 1) == 0


async def test_redis_throttle_falls_back_to_memory_when_redis_is_down():
    client = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    throttle = RedisThrottle(client, "taxi_test_down:")
    try:
        assert [await throttle.hit("k", 2, 60) for _ in range(3)][:2] == [0, 0]
        assert await throttle.hit("k", 2, 60) > 0
    finally:
        await client.aclose()


def test_limits_are_shared_by_the_workers_of_a_server(pg_database_url, tmp_path):
    env = server_env(pg_database_url, tmp_path, TAXI_LOGIN_ATTEMPTS_PER_USER="4")

    # Separate connections, so the kernel spreads them over both workers.
    with ServerProcess(env, workers=2) as server, ThreadPoolExecutor(8) as pool:
        body = {"username": "x@example.com", "password": "nope"}
        statuses = [status for status, _ in pool.map(lambda _: call(f"{server.url}/api/log_in/", body), range(12))]
    assert sorted(statuses) == [401] * 4 + [429] * 8


def test_settings_are_read_from_the_environment(tmp_path):
    from taxi.config import Settings

    settings = Settings.from_env(
        {
            "TAXI_DATABASE_URL": f"sqlite:///{tmp_path}/x.sqlite3",
            "TAXI_LOGIN_ATTEMPTS_PER_USER": "5",
            "TAXI_LOGIN_ATTEMPTS_PER_ADDRESS": "7",
            "TAXI_LOGIN_WINDOW": "30",
            "TAXI_PROXIES_COUNT": "1",
        }
    )
    assert (
        settings.login_attempts_per_user,
        settings.login_attempts_per_address,
        settings.login_window,
        settings.proxies_count,
    ) == (5, 7, 30, 1)
