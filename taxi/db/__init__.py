"""The database handle: PostgreSQL through aiopg, or SQLite through aiosqlite, behind one peewee proxy.

Models bind to ``db`` (a proxy); each process picks the real database at start-up with ``connect``.
SQLite gets a small real pool here: peewee-async's own opens a connection (and a thread) per query
and never applies PRAGMAs, so foreign keys would go unenforced.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

import aiosqlite
import peewee
import peewee_async
import psycopg2
from peewee_async.connection import connection_context
from peewee_async.databases import fetchall
from peewee_async.pool import PoolBackend
from peewee_async.utils import ConnectionProtocol

from taxi.config import DatabaseURL

db = peewee.DatabaseProxy()

_SQLITE_PRAGMAS = (
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=10000",
    "PRAGMA synchronous=NORMAL",
)


class _SqlitePool(PoolBackend):
    """A fixed set of long-lived aiosqlite connections, each with our PRAGMAs, handed out one task at a time."""

    required_modules: ClassVar[list[str]] = ["aiosqlite"]

    def __init__(self, *, database: str, **kwargs: Any) -> None:
        self._size = int(kwargs.pop("maxsize", 4))
        kwargs.pop("minsize", None)
        super().__init__(database=database, **kwargs)
        self._idle: asyncio.Queue[aiosqlite.Connection] | None = None
        self._all: list[aiosqlite.Connection] = []
        self._opening = 0
        self._closed = True

    @property
    def is_connected(self) -> bool:
        return not self._closed

    async def create(self) -> None:
        self._idle = asyncio.Queue()
        self._closed = False

    async def _open(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(self.database, isolation_level=None)
        try:
            for pragma in _SQLITE_PRAGMAS:
                await conn.execute(pragma)
        except BaseException:
            await conn.close()
            raise
        self._all.append(conn)
        return conn

    async def acquire(self) -> ConnectionProtocol:
        if self._closed or self._idle is None:
            await self.connect()
        assert self._idle is not None
        if self._idle.empty() and len(self._all) + self._opening < self._size:
            self._opening += 1  # reserve the slot before awaiting, so concurrent callers cannot overshoot
            try:
                return await self._open()
            finally:
                self._opening -= 1
        return await self._idle.get()

    async def release(self, conn: ConnectionProtocol) -> None:
        if self._closed or self._idle is None:
            await conn.close()
            return
        self._idle.put_nowait(conn)

    def has_acquired_connections(self) -> bool:
        return self._idle is not None and self._idle.qsize() < len(self._all)

    async def close(self) -> None:
        self._closed = True
        conns, self._all = self._all, []
        for conn in conns:
            await conn.close()
        self._idle = None


class SqliteDatabase(peewee_async.SqliteDatabase):
    pool_backend_cls = _SqlitePool


class PostgresqlDatabase(peewee_async.PostgresqlDatabase):
    """aiopg with one repair: a connection the server dropped is closed, not handed out again.

    Under uvloop a dead connection fails with RuntimeError ("the handler is closed"), which peewee does not
    translate; it becomes OperationalError here (answered 503), and the pool discards the connection.
    """

    async def aio_execute_sql(self, sql: str, params: Sequence[Any] | None = None, fetch_results: Any = None) -> Any:
        async def work(connection: Any, cursor: Any) -> Any:
            await cursor.execute(sql, params or ())
            return await fetch_results(self, cursor) if fetch_results is not None else None

        return await self._run(work, retry=sql.lstrip()[:6].upper() == "SELECT")

    async def fetch_prepared(self, statement: SQL, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run a hot read as a server-side prepared statement: PostgreSQL parses and plans it once per
        connection instead of on every request (planning the trip joins costs more than running them)."""
        name = statement.name

        async def work(connection: Any, cursor: Any) -> Any:
            prepared: set[str] | None = getattr(connection, "_taxi_prepared", None)
            if prepared is None:
                prepared = connection._taxi_prepared = set()
            if name not in prepared:
                await cursor.execute(f"PREPARE {name} AS {statement.numbered()}")
                prepared.add(name)
            await cursor.execute(f"EXECUTE {name} ({', '.join(['%s'] * len(params))})", params)
            return await cursor.fetchall()

        return list(await self._run(work, retry=True) or [])

    async def _run(self, work: Any, retry: bool) -> Any:
        # A read outside a transaction may be retried once on a fresh connection: after a database restart
        # every pooled connection is dead, and no client should see that once the database is back.
        retry = retry and connection_context.get() is None
        try:
            return await self._run_once(work)
        except (peewee.OperationalError, peewee.InterfaceError):
            if not retry:
                raise
        return await self._run_once(work)

    async def _run_once(self, work: Any) -> Any:
        try:
            with peewee.__exception_wrapper__:  # type: ignore[attr-defined]
                async with self.aio_connection() as connection:
                    try:
                        async with connection.cursor() as cursor:
                            return await work(connection, cursor)
                    except (RuntimeError, psycopg2.OperationalError, psycopg2.InterfaceError):
                        connection.close()  # never hand this connection out again
                        raise
        except RuntimeError as exc:
            if "closed" not in str(exc):
                raise  # a programming error, not an outage
            raise peewee.OperationalError(f"database connection lost: {exc}") from exc
        return None


def make_database(url: DatabaseURL, pool_size: int) -> peewee_async.AioDatabase:
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


async def connect(url: DatabaseURL, pool_size: int) -> peewee_async.AioDatabase:
    """Create this process's pool on the running loop and bind the models to it."""
    database = make_database(url, pool_size)
    db.initialize(database)
    await database.aio_connect()
    return database


async def fetch_all(sql: SQL, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run SQL text written once and return every row as a tuple (the hot read paths skip query building).

    A named statement runs as a server-side prepared statement on PostgreSQL.
    """
    database = db.obj
    if sql.name and isinstance(database, PostgresqlDatabase):
        return await database.fetch_prepared(sql, params)
    rows = await database.aio_execute_sql(str(sql), params, fetch_results=fetchall)
    return list(rows or [])


def is_postgresql() -> bool:
    return isinstance(db.obj, PostgresqlDatabase)


def placeholder() -> str:
    """The DB-API parameter marker of the bound database (``%s`` or ``?``)."""
    return "?" if isinstance(db.obj, peewee.SqliteDatabase) else "%s"


async def execute(sql: SQL, params: Sequence[Any] = ()) -> int:
    """Run SQL text written once that changes rows; return how many it changed."""

    async def rowcount(_db: Any, cursor: Any) -> int:
        return int(cursor.rowcount)

    return int(await db.obj.aio_execute_sql(str(sql), params, fetch_results=rowcount))


class SQL:
    """SQL text written once with ``{p}`` for each parameter, rendered for the bound backend on first use.

    A ``name`` marks a hot read that PostgreSQL should prepare once per connection (see ``fetch_all``).
    """

    __slots__ = ("_rendered", "_template", "name")

    def __init__(self, template: str, name: str = "") -> None:
        self._template = template
        self._rendered: dict[str, str] = {}
        self.name = name

    def __str__(self) -> str:
        mark = placeholder()
        text = self._rendered.get(mark)
        if text is None:
            text = self._rendered[mark] = self._template.replace("{p}", mark)
        return text

    def numbered(self) -> str:
        """The text with $1, $2, ... for PREPARE."""
        parts = self._template.split("{p}")
        return "".join(part + (f"${i}" if i < len(parts) else "") for i, part in enumerate(parts, start=1))


def timestamp(value: Any) -> Any:
    """A timezone-aware datetime as the bound backend stores it (TIMESTAMPTZ, or ISO text on SQLite)."""
    return value if placeholder() == "%s" else value.isoformat(timespec="microseconds")
