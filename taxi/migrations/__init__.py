"""Versioned schema migrations, applied in order and recorded in ``taxi_schema_version``.

Each migration is DDL for both backends. ``migrate`` is idempotent and safe to run from several
processes at once on PostgreSQL (it holds an advisory lock while it works).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from peewee_async.databases import AioDatabase, fetchall

from taxi.domain import utcnow
from taxi.migrations import sessions, usernames

log = logging.getLogger("taxi.migrations")

_LOCK_KEY = 0x7A7869  # any constant shared by every process that migrates this database


# A step is a DDL statement, or a function given the database and its parameter marker (for data changes that
# need Python, run in the migration's transaction).
Step = str | Callable[[AioDatabase, str], Awaitable[None]]


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    postgresql: tuple[Step, ...]
    sqlite: tuple[Step, ...]


_TRIP_CHECKS = "CHECK (status IN ('REQUESTED', 'STARTED', 'IN_PROGRESS', 'COMPLETED'))"

# A driver's list reads the open requests and the driver's own trips newest first, each from its index, and stops
# after LIMIT rows (taxi/queries/trips.py): with id in the index the tie-break needs no sort of every candidate.
_NEWEST_FIRST_INDEXES = (
    "DROP INDEX taxi_trip_requested_created",
    "CREATE INDEX taxi_trip_requested_created ON taxi_trip (created DESC, id DESC) WHERE status = 'REQUESTED'",
    "DROP INDEX taxi_trip_driver_created",
    "CREATE INDEX taxi_trip_driver_created ON taxi_trip (driver_id, created DESC, id DESC)",
)

# Trip locations (nearby dispatch). New nullable columns: PostgreSQL adds them without rewriting the table, and the
# pair checks are NOT VALID (every existing row is NULL, so nothing needs scanning; new rows are checked).
_LOCATION_COLUMNS = ("pick_up_lat", "pick_up_lng", "drop_off_lat", "drop_off_lng")
_PAIRS = ("pick_up", "drop_off")
# A driver is busy while it drives a trip that is STARTED or IN_PROGRESS: dispatch asks this index.
_ACTIVE_DRIVER_INDEX = (
    "CREATE INDEX taxi_trip_active_driver ON taxi_trip (driver_id) WHERE status IN ('STARTED', 'IN_PROGRESS')"
)
# The great-circle distance in metres, haversine on H3's mean Earth radius: taxi.geo.distance_m in SQL. SQLite
# gets the Python function itself on every connection (taxi/db/sqlite.py).
_DISTANCE_FUNCTION = """CREATE FUNCTION taxi_distance_m(
        a_lat DOUBLE PRECISION, a_lng DOUBLE PRECISION, b_lat DOUBLE PRECISION, b_lng DOUBLE PRECISION)
    RETURNS DOUBLE PRECISION LANGUAGE sql IMMUTABLE PARALLEL SAFE RETURNS NULL ON NULL INPUT AS $$
    SELECT 2 * 6371007.180918475 * asin(least(1.0, sqrt(
        power(sin(radians(b_lat - a_lat) / 2), 2)
        + cos(radians(a_lat)) * cos(radians(b_lat)) * power(sin(radians(b_lng - a_lng) / 2), 2))))
$$"""
_LOCATIONS_POSTGRESQL: tuple[str, ...] = (
    "ALTER TABLE taxi_trip " + ", ".join(f"ADD COLUMN {c} DOUBLE PRECISION" for c in _LOCATION_COLUMNS),
    *(
        f"ALTER TABLE taxi_trip ADD CONSTRAINT taxi_trip_{pair}_point CHECK (({pair}_lat IS NULL) = ({pair}_lng IS NULL)"
        f" AND {pair}_lat BETWEEN -90 AND 90 AND {pair}_lng BETWEEN -180 AND 180) NOT VALID"
        for pair in _PAIRS
    ),
    _ACTIVE_DRIVER_INDEX,
    _DISTANCE_FUNCTION,
)
_LOCATIONS_SQLITE: tuple[str, ...] = (
    *(f"ALTER TABLE taxi_trip ADD COLUMN {c} REAL" for c in _LOCATION_COLUMNS),
    _ACTIVE_DRIVER_INDEX,
)

# Photos in two sizes, and deleted accounts: the row stays (trips keep their other party's history) with its
# names, photo and username cleared; deleted_at says it is no longer a person.
_ACCOUNTS_POSTGRESQL: tuple[str, ...] = (
    "ALTER TABLE taxi_user ADD COLUMN photo_thumbnail VARCHAR(255), ADD COLUMN deleted_at TIMESTAMPTZ",
)
_ACCOUNTS_SQLITE: tuple[str, ...] = (
    "ALTER TABLE taxi_user ADD COLUMN photo_thumbnail VARCHAR(255)",
    "ALTER TABLE taxi_user ADD COLUMN deleted_at TEXT",
)
# Trip history pages (taxi/paging.py): each list, with or without a status filter, reads its page in order from an
# index after the keyset, however many trips the user has. A rider's list needs (rider_id, created, id); the
# rider's index of migration 1 lacked id. With ?status= that index would walk every trip of the user until enough
# match (a rider's one open trip behind 100,000 finished ones), so each role also gets (user, status, created, id).
# That one cannot replace the first: its order is per status, and all statuses would need a sort of every trip.
# (The driver's (driver_id, created, id) is migration 3's.) Writes to taxi_trip are locked while this runs.
_HISTORY_INDEXES = (
    "DROP INDEX taxi_trip_rider_created",
    "CREATE INDEX taxi_trip_rider_created ON taxi_trip (rider_id, created DESC, id DESC)",
    "CREATE INDEX taxi_trip_rider_status_created ON taxi_trip (rider_id, status, created DESC, id DESC)",
    "CREATE INDEX taxi_trip_driver_status_created ON taxi_trip (driver_id, status, created DESC, id DESC)",
)

# Photo objects written but not (yet) referenced by a user, or being deleted: what a failure between the store and
# the database would otherwise leave behind. A sweep removes the ones older than a grace period that no user names.
_PENDING_MEDIA = (
    "CREATE TABLE taxi_media_pending (name VARCHAR(255) PRIMARY KEY, created {stamp} NOT NULL)",
    "CREATE INDEX taxi_media_pending_created ON taxi_media_pending (created)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "users, trips and revoked refresh tokens",
        postgresql=(
            """CREATE TABLE taxi_user (
                id BIGSERIAL PRIMARY KEY,
                username VARCHAR(150) NOT NULL UNIQUE,
                password VARCHAR(128) NOT NULL,
                first_name VARCHAR(150) NOT NULL DEFAULT '',
                last_name VARCHAR(150) NOT NULL DEFAULT '',
                role VARCHAR(10) NOT NULL CHECK (role IN ('rider', 'driver')),
                photo VARCHAR(255),
                is_active BOOLEAN NOT NULL DEFAULT TRUE,
                date_joined TIMESTAMPTZ NOT NULL DEFAULT now())""",
            f"""CREATE TABLE taxi_trip (
                id UUID PRIMARY KEY,
                created TIMESTAMPTZ NOT NULL,
                updated TIMESTAMPTZ NOT NULL,
                pick_up_address VARCHAR(255) NOT NULL,
                drop_off_address VARCHAR(255) NOT NULL,
                status VARCHAR(20) NOT NULL {_TRIP_CHECKS},
                rider_id BIGINT REFERENCES taxi_user (id) ON DELETE SET NULL,
                driver_id BIGINT REFERENCES taxi_user (id) ON DELETE SET NULL)""",
            "CREATE INDEX taxi_trip_rider_created ON taxi_trip (rider_id, created DESC)",
            "CREATE INDEX taxi_trip_driver_created ON taxi_trip (driver_id, created DESC)",
            "CREATE INDEX taxi_trip_requested_created ON taxi_trip (created DESC) WHERE status = 'REQUESTED'",
            """CREATE TABLE taxi_revoked_token (
                jti VARCHAR(64) PRIMARY KEY,
                expires_at TIMESTAMPTZ NOT NULL)""",
            "CREATE INDEX taxi_revoked_token_expires ON taxi_revoked_token (expires_at)",
        ),
        sqlite=(
            """CREATE TABLE taxi_user (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                username VARCHAR(150) NOT NULL UNIQUE,
                password VARCHAR(128) NOT NULL,
                first_name VARCHAR(150) NOT NULL DEFAULT '',
                last_name VARCHAR(150) NOT NULL DEFAULT '',
                role VARCHAR(10) NOT NULL CHECK (role IN ('rider', 'driver')),
                photo VARCHAR(255),
                is_active INTEGER NOT NULL DEFAULT 1,
                date_joined TEXT NOT NULL)""",
            f"""CREATE TABLE taxi_trip (
                id VARCHAR(36) PRIMARY KEY,
                created TEXT NOT NULL,
                updated TEXT NOT NULL,
                pick_up_address VARCHAR(255) NOT NULL,
                drop_off_address VARCHAR(255) NOT NULL,
                status VARCHAR(20) NOT NULL {_TRIP_CHECKS},
                rider_id INTEGER REFERENCES taxi_user (id) ON DELETE SET NULL,
                driver_id INTEGER REFERENCES taxi_user (id) ON DELETE SET NULL)""",
            "CREATE INDEX taxi_trip_rider_created ON taxi_trip (rider_id, created DESC)",
            "CREATE INDEX taxi_trip_driver_created ON taxi_trip (driver_id, created DESC)",
            "CREATE INDEX taxi_trip_requested_created ON taxi_trip (created DESC) WHERE status = 'REQUESTED'",
            """CREATE TABLE taxi_revoked_token (
                jti VARCHAR(64) PRIMARY KEY,
                expires_at TEXT NOT NULL)""",
            "CREATE INDEX taxi_revoked_token_expires ON taxi_revoked_token (expires_at)",
        ),
    ),
    Migration(
        2,
        "case-insensitive usernames and refresh token rotation",
        postgresql=usernames.POSTGRESQL,
        sqlite=usernames.SQLITE,
    ),
    Migration(
        3,
        "trip list indexes ordered like the lists (created, then id)",
        postgresql=_NEWEST_FIRST_INDEXES,
        sqlite=_NEWEST_FIRST_INDEXES,
    ),
    Migration(
        4,
        "trip pick-up and drop-off locations, and the index of busy drivers",
        postgresql=_LOCATIONS_POSTGRESQL,
        sqlite=_LOCATIONS_SQLITE,
    ),
    Migration(
        5,
        "trip history indexes: each list in its order, also by status",
        postgresql=_HISTORY_INDEXES,
        sqlite=_HISTORY_INDEXES,
    ),
    Migration(
        6,
        "photo thumbnails and deleted accounts",
        postgresql=_ACCOUNTS_POSTGRESQL,
        sqlite=_ACCOUNTS_SQLITE,
    ),
    Migration(
        7,
        "photo objects pending a reference or a deletion",
        postgresql=tuple(step.format(stamp="TIMESTAMPTZ") for step in _PENDING_MEDIA),
        sqlite=tuple(step.format(stamp="TEXT") for step in _PENDING_MEDIA),
    ),
    Migration(
        8,
        "trip versions, cancellation, request ids and the index of open trips",
        postgresql=sessions.POSTGRESQL,
        sqlite=sessions.SQLITE,
    ),
)

LATEST = MIGRATIONS[-1].version


async def current_version(database: AioDatabase) -> int:
    """The highest applied migration, 0 for an empty database."""
    if "taxi_schema_version" not in await database.aio_get_tables():
        return 0
    rows = await database.aio_execute_sql("SELECT MAX(version) FROM taxi_schema_version", fetch_results=fetchall)
    return int(rows[0][0] or 0)


async def migrate(database: AioDatabase, up_to: int | None = None) -> list[int]:
    """Apply every pending migration (up to version ``up_to``), each in its own transaction; return the versions
    applied."""
    sqlite = database.__class__.__name__ == "SqliteDatabase"
    mark = "?" if sqlite else "%s"
    applied: list[int] = []
    async with database.aio_connection():
        if sqlite:
            await database.aio_execute_sql("PRAGMA journal_mode=WAL")
        else:
            await database.aio_execute_sql("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            await database.aio_execute_sql(
                "CREATE TABLE IF NOT EXISTS taxi_schema_version "
                "(version INTEGER PRIMARY KEY, name VARCHAR(200) NOT NULL, applied_at VARCHAR(40) NOT NULL)"
            )
            done = await current_version(database)
            for migration in MIGRATIONS:
                if migration.version <= done or (up_to is not None and migration.version > up_to):
                    continue
                async with database.aio_atomic():
                    for step in migration.sqlite if sqlite else migration.postgresql:
                        if isinstance(step, str):
                            await database.aio_execute_sql(step)
                        else:
                            await step(database, mark)
                    await database.aio_execute_sql(
                        f"INSERT INTO taxi_schema_version (version, name, applied_at) VALUES ({mark}, {mark}, {mark})",
                        (migration.version, migration.name, utcnow().isoformat()),
                    )
                log.info("applied migration %04d: %s", migration.version, migration.name)
                applied.append(migration.version)
        finally:
            if not sqlite:
                await database.aio_execute_sql("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied
