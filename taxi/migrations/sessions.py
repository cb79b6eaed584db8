"""Migration 8: what sessions on phones need from a trip row.

- ``version``: 1 when created, plus 1 in the statement of every change (a reconnecting client compares versions).
- ``CANCELED``: a final status. PostgreSQL swaps the status check (``NOT VALID``: no row is scanned, every existing
  one already passes). SQLite cannot alter a check, so the table is rebuilt with its rows and its indexes.
- ``cancel_reason``: the rider's optional reason.
- ``request_id``: the client's id of a request; unique per rider, so a retried request finds its trip.
- An index of each rider's open trips: the open-trip limit counts them on every request.
"""

from __future__ import annotations

from peewee_async.databases import AioDatabase, fetchall

_OPEN = "status IN ('REQUESTED', 'STARTED', 'IN_PROGRESS')"
_STATUS_CHECK = "CHECK (status IN ('REQUESTED', 'STARTED', 'IN_PROGRESS', 'COMPLETED', 'CANCELED'))"
_INDEXES = (
    f"CREATE INDEX taxi_trip_rider_open ON taxi_trip (rider_id) WHERE {_OPEN}",
    "CREATE UNIQUE INDEX taxi_trip_rider_request ON taxi_trip (rider_id, request_id) WHERE request_id IS NOT NULL",
)

POSTGRESQL: tuple[str, ...] = (
    "ALTER TABLE taxi_trip ADD COLUMN version INTEGER NOT NULL DEFAULT 1, "
    "ADD COLUMN cancel_reason VARCHAR(255), ADD COLUMN request_id UUID",
    "ALTER TABLE taxi_trip DROP CONSTRAINT taxi_trip_status_check",
    f"ALTER TABLE taxi_trip ADD CONSTRAINT taxi_trip_status_check {_STATUS_CHECK} NOT VALID",
    *_INDEXES,
)

# The trip table as migrations 1 and 4 left it on SQLite, with the new status check and columns.
_SQLITE_TABLE = f"""CREATE TABLE taxi_trip_new (
    id VARCHAR(36) PRIMARY KEY,
    created TEXT NOT NULL,
    updated TEXT NOT NULL,
    pick_up_address VARCHAR(255) NOT NULL,
    drop_off_address VARCHAR(255) NOT NULL,
    status VARCHAR(20) NOT NULL {_STATUS_CHECK},
    rider_id INTEGER REFERENCES taxi_user (id) ON DELETE SET NULL,
    driver_id INTEGER REFERENCES taxi_user (id) ON DELETE SET NULL,
    pick_up_lat REAL, pick_up_lng REAL, drop_off_lat REAL, drop_off_lng REAL,
    version INTEGER NOT NULL DEFAULT 1,
    cancel_reason VARCHAR(255),
    request_id VARCHAR(36))"""
_COPIED = (
    "id, created, updated, pick_up_address, drop_off_address, status, rider_id, driver_id, "
    "pick_up_lat, pick_up_lng, drop_off_lat, drop_off_lng"
)


async def rebuild_sqlite_trips(database: AioDatabase, mark: str) -> None:
    """SQLite's way to change a check: a new table, the rows copied, the old one dropped, its indexes made again
    (read from the schema, so whatever indexes earlier migrations made come back as they were)."""
    indexes = await database.aio_execute_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'taxi_trip' AND sql IS NOT NULL",
        fetch_results=fetchall,
    )
    await database.aio_execute_sql(_SQLITE_TABLE)
    await database.aio_execute_sql(f"INSERT INTO taxi_trip_new ({_COPIED}) SELECT {_COPIED} FROM taxi_trip")
    await database.aio_execute_sql("DROP TABLE taxi_trip")
    await database.aio_execute_sql("ALTER TABLE taxi_trip_new RENAME TO taxi_trip")
    for (sql,) in indexes:
        await database.aio_execute_sql(sql)
    for sql in _INDEXES:
        await database.aio_execute_sql(sql)


SQLITE = (rebuild_sqlite_trips,)
