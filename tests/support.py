"""Test helpers: synchronous access to the test databases, images, and HTTP shortcuts."""

from __future__ import annotations

import contextlib
import io
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg2
from PIL import Image

from taxi.config import DatabaseURL

PASSWORD = "pAssw0rd!"


def png(width: int = 100, height: int = 100, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buf, fmt)
    return buf.getvalue()


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
                for table in ("taxi_trip", "taxi_revoked_token", "taxi_user", "sqlite_sequence"):
                    cur.execute(f"DELETE FROM {table}")
            else:
                cur.execute("TRUNCATE taxi_trip, taxi_revoked_token, taxi_user RESTART IDENTITY CASCADE")

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
    ) -> str:
        trip_id = uuid.uuid4()
        created = datetime.now(UTC) - timedelta(seconds=age_seconds)
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
