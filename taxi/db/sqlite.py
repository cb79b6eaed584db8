"""SQLite through aiosqlite, with a small real pool.

peewee-async's own SQLite backend opens a connection (and a thread) per query and never applies PRAGMAs, so
foreign keys would go unenforced. This pool keeps a few long-lived connections, each with our PRAGMAs.
It implements peewee-async's ``PoolBackend`` interface (a contract the tests pin).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, ClassVar

import aiosqlite
import peewee_async
from peewee_async.pool import PoolBackend
from peewee_async.utils import ConnectionProtocol

from taxi.db.outage import outage_as_unavailable
from taxi.db.usage import CountingPool
from taxi.geo import distance_m

PRAGMAS = (
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=10000",
    "PRAGMA synchronous=NORMAL",
)


def _distance_m(a_lat: float | None, a_lng: float | None, b_lat: float | None, b_lng: float | None) -> float | None:
    if a_lat is None or a_lng is None or b_lat is None or b_lng is None:
        return None  # as PostgreSQL's RETURNS NULL ON NULL INPUT
    return distance_m(a_lat, a_lng, b_lat, b_lng)


class SqlitePool(PoolBackend):
    """A fixed set of long-lived aiosqlite connections, each with our PRAGMAs, handed out one task at a time."""

    required_modules: ClassVar[list[str]] = ["aiosqlite"]

    def __init__(self, *, database: str, **kwargs: Any) -> None:
        self.size = int(kwargs.pop("maxsize", 4))
        kwargs.pop("minsize", None)
        super().__init__(database=database, **kwargs)
        self._idle: asyncio.Queue[aiosqlite.Connection] | None = None
        self._all: list[aiosqlite.Connection] = []
        self._opening = 0
        self._closed = True

    @property
    def is_connected(self) -> bool:
        return not self._closed

    @property
    def opened(self) -> int:
        """How many connections are open (idle or in use)."""
        return len(self._all)

    async def create(self) -> None:
        self._idle = asyncio.Queue()
        self._closed = False

    async def _open(self) -> aiosqlite.Connection:
        pending = aiosqlite.connect(self.database, isolation_level=None)
        # Its thread would keep a stopping worker alive if a connection were ever left open (Python waits for
        # non-daemon threads at exit); a daemon thread cannot. The pool still closes every connection it opened.
        thread = getattr(pending, "_thread", None)
        if thread is not None:
            thread.daemon = True
        conn = await pending
        try:
            for pragma in PRAGMAS:
                await conn.execute(pragma)
            # The SQL function migration 4 creates on PostgreSQL; the same formula, so both backends agree.
            await conn.create_function("taxi_distance_m", 4, _distance_m, deterministic=True)
        except BaseException:
            await conn.close()
            raise
        self._all.append(conn)
        return conn

    async def acquire(self) -> ConnectionProtocol:
        if self._closed or self._idle is None:
            await self.connect()
        assert self._idle is not None
        if self._idle.empty() and len(self._all) + self._opening < self.size:
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


class _CountingSqlitePool(CountingPool, SqlitePool):
    """The SQLite pool, counting connections in use and waiters for the metrics."""


class SqliteDatabase(peewee_async.SqliteDatabase):
    """peewee-async's SQLite database on our pool; an outage (a locked or unreadable file) is a 503."""

    pool_backend_cls = _CountingSqlitePool

    async def aio_execute_sql(self, sql: str, params: Sequence[Any] | None = None, fetch_results: Any = None) -> Any:
        with outage_as_unavailable():
            return await super().aio_execute_sql(sql, params, fetch_results)
