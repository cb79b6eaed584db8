"""Test helpers: waiting for a condition, synchronous access to the test databases, images, and HTTP shortcuts."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import sqlite3
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, overload

import psycopg2
from PIL import Image
from sanic import Sanic
from sanic_testing.reusable import ReusableClient

from taxi.config import DatabaseURL
from taxiload.harness import TIMEOUT_SCALE, free_port

PASSWORD = "pAssw0rd!"
# One scale for every wait in the tests: raise it on a slow machine instead of editing numbers.

T = TypeVar("T")


class _Poll:
    """What ``eventually`` and ``eventually_sync`` share: the deadline, and the message when it passes."""

    def __init__(self, what: str, until: Callable[[Any], object], timeout: float) -> None:
        self.what = what
        self.until = until
        self.seconds = timeout * TIMEOUT_SCALE
        self.deadline = time.monotonic() + self.seconds
        self.last: object = "nothing (never probed)"

    def done(self, value: object) -> bool:
        self.last = value
        return bool(self.until(value))

    def failed(self, exc: BaseException) -> None:
        self.last = exc

    def give_up(self) -> bool:
        return time.monotonic() >= self.deadline

    def error(self) -> AssertionError:
        return AssertionError(f"never true within {self.seconds:g} s: {self.what}; last seen: {self.last!r}")


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    what: str,
    *,
    until: Callable[[T], object] = ...,
    timeout: float = ...,
    interval: float = ...,
    retry_on: tuple[type[BaseException], ...] = ...,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    what: str,
    *,
    until: Callable[[T], object] = ...,
    timeout: float = ...,
    interval: float = ...,
    retry_on: tuple[type[BaseException], ...] = ...,
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    what: str,
    *,
    until: Callable[[Any], object] = bool,
    timeout: float = 5.0,
    interval: float = 0.01,
    retry_on: tuple[type[BaseException], ...] = (),
) -> Any:
    """Call ``probe`` (a plain or an async function) until ``until`` holds for what it returns, and return that.

    ``timeout`` is in seconds, scaled by TAXI_TEST_TIMEOUT_SCALE; when it passes, AssertionError says ``what``
    never became true and shows the last value seen. An exception of a ``retry_on`` type counts as "not yet".
    """
    poll = _Poll(what, until, timeout)
    while True:
        try:
            value = probe()
            if inspect.isawaitable(value):
                value = await value
        except retry_on as exc:
            poll.failed(exc)
        else:
            if poll.done(value):
                return value
        if poll.give_up():
            raise poll.error()
        await asyncio.sleep(interval)


def eventually_sync(
    probe: Callable[[], T],
    what: str,
    *,
    until: Callable[[T], object] = bool,
    timeout: float = 5.0,
    interval: float = 0.05,
    retry_on: tuple[type[BaseException], ...] = (),
) -> T:
    """``eventually`` for code outside an event loop: the same arguments, but ``probe`` is a plain function."""
    poll = _Poll(what, until, timeout)
    while True:
        try:
            value = probe()
        except retry_on as exc:
            poll.failed(exc)
        else:
            if poll.done(value):
                return value
        if poll.give_up():
            raise poll.error()
        time.sleep(interval)


def png(width: int = 100, height: int = 100, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, fmt)
    return buf.getvalue()


# Every table a test may fill, emptied before each test (children before their parents).
TABLES = ("taxi_trip", "taxi_revoked_token", "taxi_spent_token", "taxi_media_pending", "taxi_user")


class SyncDB:
    """Direct SQL on a test database, for arranging state and checking what was stored."""

    def __init__(self, url: DatabaseURL) -> None:
        self.url = url

    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        if self.url.is_sqlite:
            conn = sqlite3.connect(self.url.name, isolation_level=None)
        else:
            conn = psycopg2.connect(dbname=self.url.name, host=self.url.host, port=self.url.port, user=self.url.user)
            conn.autocommit = True
        try:
            yield conn
        finally:
            conn.close()

    def _sql(self, sql: str) -> str:
        return sql.replace("%s", "?") if self.url.is_sqlite else sql

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> int:
        with self.connect() as conn:
            cur = conn.cursor()
            cur.execute(self._sql(sql), params)
            return int(cur.rowcount)

    def fetch(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.connect() as conn:
            cur = conn.cursor()
            cur.execute(self._sql(sql), params)
            return list(cur.fetchall())

    def reset(self) -> None:
        with self.connect() as conn:
            cur = conn.cursor()
            if self.url.is_sqlite:
                for table in (*TABLES, "sqlite_sequence"):
                    cur.execute(f"DELETE FROM {table}")
            else:
                cur.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")

    def user_id(self, username: str) -> int:
        return int(self.fetch("SELECT id FROM taxi_user WHERE username = %s", (username,))[0][0])

    def add_trip(
        self,
        rider: int | None,
        driver: int | None = None,
        status: str = "REQUESTED",
        pick_up: str = "A",
        drop_off: str = "B",
        age_seconds: float = 0,
        created: datetime | None = None,
    ) -> str:
        trip_id = uuid.uuid4()
        created = created or datetime.now(UTC) - timedelta(seconds=age_seconds)
        stamp: Any = created.isoformat(timespec="microseconds") if self.url.is_sqlite else created
        self.execute(
            "INSERT INTO taxi_trip (id, created, updated, pick_up_address, drop_off_address, status, rider_id, "
            "driver_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (trip_id.hex, stamp, stamp, pick_up, drop_off, status, rider, driver),
        )
        return str(trip_id)

    def trip_status(self, trip_id: str) -> tuple[str, int | None]:
        row = self.fetch("SELECT status, driver_id FROM taxi_trip WHERE id = %s", (uuid.UUID(trip_id).hex,))[0]
        return row[0], row[1]


def sign_up(client: Any, username: str, group: str = "rider", **extra: Any) -> dict[str, Any]:
    body = {
        "username": username,
        "first_name": extra.pop("first_name", "Test"),
        "last_name": extra.pop("last_name", "User"),
        "password1": PASSWORD,
        "password2": PASSWORD,
        "group": group,
        **extra,
    }
    _, resp = client.post("/api/sign_up/", json=body)
    assert resp.status == 201, resp.text
    return dict(resp.json)


def log_in(client: Any, username: str, password: str = PASSWORD) -> dict[str, str]:
    _, resp = client.post("/api/log_in/", json={"username": username, "password": password})
    assert resp.status == 200, resp.text
    return dict(resp.json)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.contextmanager
def serving_app(app: Sanic[Any, Any]) -> Iterator[ReusableClient]:
    """A real server for ``app`` (sanic-testing's reusable client) whose event loop is closed afterwards.

    ReusableClient leaves its loop open: an epoll and a socket pair per test. A whole run of them went past 1024
    descriptors, where aiopg's ``select()`` fails ("filedescriptor out of range") in whatever test comes next.
    """
    client = ReusableClient(app, port=free_port())
    try:
        with client:
            yield client
    finally:
        close_loop(client._loop)


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Finish what is left on a test server's loop (tasks cancelled, generators and executor shut), then close it."""
    if loop.is_closed():
        return
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.run_until_complete(loop.shutdown_default_executor())
    loop.close()
