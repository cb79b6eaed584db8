"""Migrations on databases that already hold data: migration 2 (names that now count as one keep logging in) and
migration 4 (trips gain locations in place)."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import bcrypt
import psycopg2
import pytest
from sanic_testing.reusable import ReusableClient

from taxi import db as dbm
from taxi.app import create_app
from taxi.config import DatabaseURL
from taxi.migrations import LATEST, current_version, migrate
from taxiload.harness import free_port
from tests.conftest import PG_HOST, PG_PORT, PG_USER, RUN_ID, _admin, make_settings
from tests.support import PASSWORD, SyncDB

# Accounts created before usernames had a rule: case variants, both Unicode forms of "é", a bidi override.
OLD_NAMES = ["bob", "BOB", "Jos\u00e9", "Jose\u0301", "al\u202eice"]


async def _migrate(url: DatabaseURL, up_to: int | None = None) -> list[int]:
    database = dbm.make_database(url, 1)
    await database.aio_connect()
    try:
        return await migrate(database, up_to)
    finally:
        await database.aio_close()


@pytest.fixture(params=["postgresql", "sqlite"])
def version_1(request, tmp_path) -> Iterator[DatabaseURL]:
    """A new database at schema version 1, dropped afterwards."""
    if request.param == "sqlite":
        url = DatabaseURL(backend="sqlite", name=str(tmp_path / "old.sqlite3"))
    else:
        url = DatabaseURL("postgresql", f"taxi_test_{RUN_ID}_v1_{secrets.token_hex(3)}", PG_HOST, PG_PORT, PG_USER)
        conn = _admin()
        conn.cursor().execute(f'CREATE DATABASE "{url.name}"')
        conn.close()
    asyncio.run(_migrate(url, up_to=1))
    yield url
    if not url.is_sqlite:
        conn = _admin()
        conn.cursor().execute(f'DROP DATABASE IF EXISTS "{url.name}" WITH (FORCE)')
        conn.close()


def test_existing_accounts_that_now_collide_keep_logging_in(version_1, tmp_path, caplog):
    sql = SyncDB(version_1)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    ids = {}
    for name in OLD_NAMES:
        sql.execute(
            "INSERT INTO taxi_user (username, password, role, date_joined) VALUES (%s, %s, %s, %s)",
            (name, hashed, "rider", datetime.now(UTC).isoformat()),
        )
        ids[name] = sql.user_id(name)
    with caplog.at_level(logging.WARNING, logger="taxi.migrations"):
        assert asyncio.run(_migrate(version_1)) == list(range(2, LATEST + 1))
    assert sum("same case-insensitive username" in r.getMessage() for r in caplog.records) == 2

    app = create_app(make_settings(version_1, tmp_path), name=f"taxi_{secrets.token_hex(4)}")
    with ReusableClient(app, port=free_port()) as client:
        for name in OLD_NAMES:  # each, typed exactly, still reaches its own account
            _, resp = client.post("/api/log_in/", json={"username": name, "password": PASSWORD})
            assert resp.status == 200, (name, resp.text)
            _, trips = client.get("/api/trip/", headers={"Authorization": f"Bearer {resp.json['access']}"})
            assert trips.status == 200
            assert ids[name] == _token_id(resp.json["access"]), name
        # Typed in another case, a name reaches the oldest account that holds it.
        _, resp = client.post("/api/log_in/", json={"username": "Bob", "password": PASSWORD})
        assert resp.status == 200 and _token_id(resp.json["access"]) == ids["bob"]
        # And nobody can take any variant of a name in use.
        for name in ("Bob", "JOS\u00c9"):
            body = {"username": name, "password1": PASSWORD, "password2": PASSWORD, "group": "rider"}
            _, taken = client.post("/api/sign_up/", json=body)
            assert taken.status == 400 and list(taken.json) == ["username"], name
    assert asyncio.run(_current(version_1)) == LATEST


def _token_id(token: str) -> int:
    import jwt

    return int(jwt.decode(token, options={"verify_signature": False})["id"])


async def _current(url: DatabaseURL) -> int:
    database = dbm.make_database(url, 1)
    await database.aio_connect()
    try:
        return await current_version(database)
    finally:
        await database.aio_close()


def test_trips_stored_before_locations_keep_their_data_and_read_with_null_places(version_1, tmp_path):
    sql = SyncDB(version_1)
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    for name, role in (("old-rider", "rider"), ("old-driver", "driver")):
        sql.execute(
            "INSERT INTO taxi_user (username, password, role, date_joined) VALUES (%s, %s, %s, %s)",
            (name, hashed, role, datetime.now(UTC).isoformat()),
        )
    rider, driver = sql.user_id("old-rider"), sql.user_id("old-driver")
    waiting = sql.add_trip(rider, pick_up="1 Main St", age_seconds=60)
    driving = sql.add_trip(rider, driver, status="IN_PROGRESS", drop_off="2 Oak Ave", age_seconds=30)
    assert asyncio.run(_migrate(version_1)) == list(range(2, LATEST + 1))

    app = create_app(make_settings(version_1, tmp_path), name=f"taxi_{secrets.token_hex(4)}")
    with ReusableClient(app, port=free_port()) as client:
        _, resp = client.post("/api/log_in/", json={"username": "old-driver", "password": PASSWORD})
        _, trips = client.get("/api/trip/", headers={"Authorization": f"Bearer {resp.json['access']}"})
    assert trips.status == 200
    by_id = {t["id"]: t for t in trips.json}
    assert set(by_id) == {waiting, driving}  # a request that names no place is one any driver could accept
    assert by_id[waiting]["pick_up_address"] == "1 Main St" and by_id[driving]["drop_off_address"] == "2 Oak Ave"
    assert by_id[driving]["status"] == "IN_PROGRESS" and by_id[driving]["driver"]["id"] == driver
    for trip in by_id.values():
        assert (trip["pick_up_location"], trip["drop_off_location"], trip["driver_location"]) == (None, None, None)
    # The new columns take a place; a half point (a latitude without its longitude) is refused by PostgreSQL.
    sql.execute(
        "UPDATE taxi_trip SET pick_up_lat = %s, pick_up_lng = %s WHERE id = %s", (52.5, 13.4, uuid.UUID(waiting).hex)
    )
    if not version_1.is_sqlite:
        with pytest.raises(psycopg2.IntegrityError):
            sql.execute("UPDATE taxi_trip SET drop_off_lat = 1 WHERE id = %s", (uuid.UUID(driving).hex,))


def test_trips_stored_before_versions_start_at_version_1_and_may_be_cancelled(version_1):
    sql = SyncDB(version_1)
    sql.execute(
        "INSERT INTO taxi_user (username, password, role, date_joined) VALUES (%s, %s, %s, %s)",
        ("old-rider", "x", "rider", datetime.now(UTC).isoformat()),
    )
    rider = sql.user_id("old-rider")
    old = sql.add_trip(rider, pick_up="1 Main St", age_seconds=60)
    assert asyncio.run(_migrate(version_1, up_to=4)) == [2, 3, 4]
    located = sql.add_trip(rider, drop_off="2 Oak Ave")
    sql.execute("UPDATE taxi_trip SET pick_up_lat = 1, pick_up_lng = 2 WHERE id = %s", (uuid.UUID(located).hex,))
    assert asyncio.run(_migrate(version_1)) == list(range(5, LATEST + 1))

    rows = sql.fetch("SELECT id, pick_up_address, pick_up_lat, version, cancel_reason, request_id FROM taxi_trip")
    assert {(uuid.UUID(str(r[0])).hex, r[1], r[2], r[3], r[4], r[5]) for r in rows} == {
        (uuid.UUID(old).hex, "1 Main St", None, 1, None, None),
        (uuid.UUID(located).hex, "A", 1, 1, None, None),
    }
    sql.execute("UPDATE taxi_trip SET status = 'CANCELED' WHERE id = %s", (uuid.UUID(old).hex,))
    with pytest.raises((psycopg2.IntegrityError, sqlite3.IntegrityError)):
        sql.execute("UPDATE taxi_trip SET status = 'LOST' WHERE id = %s", (uuid.UUID(old).hex,))
    if version_1.is_sqlite:  # the table was rebuilt: the indexes of migrations 1 to 4 came back with it
        names = {r[0] for r in sql.fetch("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
        assert {"taxi_trip_rider_created", "taxi_trip_active_driver", "taxi_trip_rider_open"} <= names
