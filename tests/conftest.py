"""Fixtures: one PostgreSQL database and one SQLite file per test run, emptied before every test.

Set TAXI_TEST_PG_HOST/PORT/USER and TAXI_TEST_REDIS_URL to point the suite elsewhere; by default it uses the
PostgreSQL and Redis on 127.0.0.1 (scripts/test sets them to private instances when nothing answers there).
The run's database is dropped at the end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import redis
from sanic import Sanic
from sanic_testing.reusable import ReusableClient

from taxi import db as dbm
from taxi.app import TaxiApp, create_app
from taxi.config import DatabaseURL, Settings
from taxi.migrations import migrate
from taxiload.harness import PrivateRedis
from tests import frames, wsclient
from tests.support import SyncDB, serving_app

RUN_ID = f"{os.getpid()}_{secrets.token_hex(3)}"
PG_HOST = os.environ.get("TAXI_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TAXI_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TAXI_TEST_PG_USER", "postgres")
REDIS_URL = os.environ.get("TAXI_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SECRET = "test-secret-" + "k" * 40

Sanic.test_mode = True


async def _migrate(url: DatabaseURL) -> None:
    database = dbm.make_database(url, 1)
    await database.aio_connect()
    try:
        await migrate(database)
    finally:
        await database.aio_close()


def _admin() -> psycopg2.extensions.connection:
    conn = psycopg2.connect(dbname="postgres", host=PG_HOST, port=PG_PORT, user=PG_USER)
    conn.autocommit = True
    return conn


@pytest.fixture(autouse=True)
def frames_follow_the_asyncapi_document() -> Iterator[None]:
    """Every frame a test's sockets (tests/wsclient.py) exchanged is one the AsyncAPI document describes, both ways
    (tests/frames.py); a frame it does not describe fails the test at teardown."""
    recordings: list[wsclient.Recording] = []
    wsclient.RECORDINGS = recordings
    try:
        yield
    finally:
        wsclient.RECORDINGS = None
    problems = frames.check(recordings).problems
    assert not problems, f"{len(problems)} frames not in /docs/asyncapi.json:\n" + "\n".join(problems[:10])


@pytest.fixture(scope="session", autouse=True)
def redis_keys_removed() -> Iterator[None]:
    """Every Redis key of this run starts with taxi_test_<run id>; delete them all at the end."""
    yield
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"taxi_test_{RUN_ID}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[DatabaseURL]:
    name = f"taxi_test_{RUN_ID}"
    conn = _admin()
    try:
        conn.cursor().execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    url = DatabaseURL(backend="postgresql", name=name, host=PG_HOST, port=PG_PORT, user=PG_USER)
    try:
        asyncio.run(_migrate(url))
        yield url
    finally:
        conn = _admin()
        try:
            conn.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> DatabaseURL:
    url = DatabaseURL(backend="sqlite", name=str(tmp_path_factory.mktemp("sqlite") / "taxi.sqlite3"))
    asyncio.run(_migrate(url))
    return url


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> DatabaseURL:
    """Each test that uses it runs on both backends, starting from empty tables."""
    url: DatabaseURL = request.getfixturevalue(f"{request.param}_url")
    SyncDB(url).reset()
    return url


@pytest.fixture
def pg_database_url(postgresql_url: DatabaseURL) -> DatabaseURL:
    """PostgreSQL only, emptied (for tests of production-only behaviour)."""
    SyncDB(postgresql_url).reset()
    return postgresql_url


@pytest.fixture
def sql(database_url: DatabaseURL) -> SyncDB:
    return SyncDB(database_url)


@pytest.fixture
def settings(database_url: DatabaseURL, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)


def make_settings(url: DatabaseURL, tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = dict(
        database=url,
        secret_key=SECRET,
        media_root=tmp_path / "media",
        bcrypt_rounds=4,
        redis_prefix=f"taxi_test_{RUN_ID}_{secrets.token_hex(3)}:",
    )
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture(params=["postgresql+redis", "sqlite+local"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """The two real shapes: production (PostgreSQL, Redis broker) and the embedded default (SQLite, in-process)."""
    backend, broker = request.param.split("+")
    url: DatabaseURL = request.getfixturevalue(f"{backend}_url")
    SyncDB(url).reset()
    return make_settings(url, tmp_path, redis_url=REDIS_URL if broker == "redis" else None)


@pytest.fixture
def app(settings: Settings) -> TaxiApp:
    return create_app(settings, name=f"taxi_{secrets.token_hex(4)}")


@pytest.fixture
def client(app: TaxiApp) -> Iterator[ReusableClient]:
    """A real server for this test (sanic-testing), reused by every request the test makes."""
    with serving_app(app) as client:
        yield client


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A Redis of our own on a free port, so stopping it touches nobody else (``.stop()``, ``.start()``, ``.url``)."""
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()
