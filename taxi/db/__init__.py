"""The database handle: PostgreSQL through aiopg, or SQLite through aiosqlite, behind one peewee proxy.

Models bind to ``db`` (a proxy); each process picks the real database at start-up with ``connect``. Queries
written as SQL run through ``fetch_all`` and ``execute``; an outage raises ``ServiceUnavailable`` (503) from
here, whichever way a statement was run.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Sequence
from typing import Any

import peewee
import psycopg2
from peewee_async.databases import AioDatabase

from taxi.config import DatabaseURL
from taxi.db.outage import is_lost_connection, outage_as_unavailable
from taxi.db.postgres import PostgresqlDatabase
from taxi.db.sqlite import SqliteDatabase
from taxi.db.statements import SQL

__all__ = [
    "SQL",
    "PostgresqlDatabase",
    "SqliteDatabase",
    "connect",
    "db",
    "execute",
    "fetch_all",
    "is_postgresql",
    "make_database",
    "timestamp",
    "transaction",
]

db = peewee.DatabaseProxy()


def make_database(url: DatabaseURL, pool_size: int) -> AioDatabase:
    """A peewee-async database for ``url``, not yet connected."""
    if url.is_sqlite:
        return SqliteDatabase(url.name, pool_params={"maxsize": min(pool_size, 4)})
    return PostgresqlDatabase(
        url.name,
        host=url.host,
        port=url.port,
        user=url.user,
        password=url.password,
        pool_params={"minsize": 1, "maxsize": pool_size, "timeout": 10, "pool_recycle": 300},
    )


async def connect(url: DatabaseURL, pool_size: int) -> AioDatabase:
    """Create this process's pool on the running loop and bind the models to it."""
    database = make_database(url, pool_size)
    db.initialize(database)
    await database.aio_connect()
    return database


def is_postgresql() -> bool:
    return isinstance(db.obj, PostgresqlDatabase)


def _mark() -> str:
    """The DB-API parameter marker of the bound database."""
    return "%s" if is_postgresql() else "?"


async def fetch_all(sql: SQL, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Every row of a read written once as SQL (the hot paths skip peewee's query building).

    A named statement runs as a server-side prepared statement on PostgreSQL.
    """
    database = db.obj
    if isinstance(database, PostgresqlDatabase):
        return await database.fetch(sql, params)
    rows = await database.aio_execute_sql(sql.render("?"), params, fetch_results=_all_rows)
    return list(rows or [])


async def execute(sql: SQL, params: Sequence[Any] = ()) -> int:
    """Run a statement written once that changes rows; return how many it changed."""
    return int(await db.obj.aio_execute_sql(sql.render(_mark()), params, fetch_results=_rowcount))


@contextlib.asynccontextmanager
async def transaction() -> AsyncIterator[None]:
    """Run the statements of the block in one transaction on one connection; an outage anywhere in it (BEGIN and
    COMMIT included, which bypass ``execute``) is a 503 like any other."""
    with outage_as_unavailable():
        try:
            async with db.obj.aio_atomic():
                yield
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            raise peewee.OperationalError(f"database connection lost: {exc}") from exc
        except RuntimeError as exc:
            if not is_lost_connection(exc):
                raise
            raise peewee.OperationalError(f"database connection lost: {exc}") from exc


async def _all_rows(_db: Any, cursor: Any) -> Any:
    return await cursor.fetchall()


async def _rowcount(_db: Any, cursor: Any) -> int:
    return int(cursor.rowcount)


def timestamp(value: dt.datetime) -> Any:
    """A timezone-aware datetime as the bound backend stores it (TIMESTAMPTZ, or ISO text on SQLite)."""
    return value if is_postgresql() else value.isoformat(timespec="microseconds")
