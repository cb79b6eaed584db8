"""The PostgreSQL connection pool: aiopg connections, handed over without a lock.

aiopg's own pool serialises every acquire and every release on one ``asyncio.Condition``: a connection released is
announced by a task of its own, the waiter it wakes must then win the condition's lock, and every new acquirer
queues on that lock too. Each handover costs a few event loop iterations, so a busy worker (thousands of sockets,
iterations of several milliseconds) hands out connections at a few dozen a second however many sit free: with
5,000 sockets per worker, 124 tasks waited for a connection while PostgreSQL showed every connection idle, and
requests timed out after 10 s (``scripts/bench_ws --scenario city``).

Here a free connection is taken at once, with no await; a released one goes straight to the oldest waiter, or back
to the free list. Same settings as aiopg's (``minsize``, ``maxsize``, ``timeout``, ``pool_recycle``), and the
same connections (``aiopg.connect``), so the rest of aiopg (cursors, notices, cancellation) is unchanged.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import aiopg
import psycopg2.extensions


class Pool:
    """What peewee-async's aiopg backend uses of a pool: ``acquire``, ``release``, ``terminate``, ``wait_closed``,
    ``closed`` and ``_used``."""

    def __init__(self, minsize: int, maxsize: int, timeout: float, pool_recycle: float, **connect: Any) -> None:
        self.minsize = minsize
        self.maxsize = max(1, maxsize)
        self._timeout = timeout
        self._recycle = pool_recycle
        self._connect = connect
        self._free: collections.deque[aiopg.Connection] = collections.deque()
        self._used: set[aiopg.Connection] = set()
        # Each waiter's future gets a connection, or None when a place was freed for it to open one.
        self._waiters: collections.deque[asyncio.Future[aiopg.Connection | None]] = collections.deque()
        self._opening = 0
        self.closed = False

    @property
    def size(self) -> int:
        return len(self._free) + len(self._used) + self._opening

    async def fill(self) -> None:
        """Open the first ``minsize`` connections (at start: a database that is not there fails here)."""
        while self.size < self.minsize:
            self._free.append(await self._open())

    async def acquire(self) -> aiopg.Connection:
        if self.closed:
            raise RuntimeError("Cannot acquire connection after closing pool")
        async with asyncio.timeout(self._timeout):
            while True:
                conn = self._take_free()
                if conn is not None:
                    return conn
                if self.size < self.maxsize:
                    conn = await self._open()
                    self._used.add(conn)
                    return conn
                fut: asyncio.Future[aiopg.Connection | None] = asyncio.get_running_loop().create_future()
                self._waiters.append(fut)
                try:
                    conn = await fut
                except BaseException:
                    handed = fut.done() and not fut.cancelled() and fut.exception() is None
                    if handed and (given := fut.result()) is not None:
                        self.release(given)  # handed over just as the waiter gave up: pass it on
                    elif not fut.done():
                        fut.cancel()  # left in the queue; release skips it
                    raise
                if conn is not None:
                    return conn  # release put it in _used for us

    def _take_free(self) -> aiopg.Connection | None:
        now = asyncio.get_running_loop().time()
        while self._free:
            conn = self._free.popleft()
            if conn.closed:
                continue
            if -1 < self._recycle < now - conn.last_usage:
                conn.close()
                continue
            self._used.add(conn)
            return conn
        return None

    async def _open(self) -> aiopg.Connection:
        self._opening += 1
        try:
            conn = await aiopg.connect(timeout=self._timeout, **self._connect)
        finally:
            self._opening -= 1
        if self.closed:
            conn.close()
            raise RuntimeError("the pool was closed while a connection was being opened")
        return conn

    def release(self, conn: aiopg.Connection) -> None:
        self._used.discard(conn)
        reusable = not conn.closed and not self.closed
        if reusable and conn.raw.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            reusable = False  # never hand out a connection in the middle of a transaction
        if not reusable:
            if not conn.closed:
                conn.close()
            self._wake(None)  # a place is free: the oldest waiter opens a connection of its own
            return
        if self._wake(conn):
            return
        self._free.append(conn)

    def _wake(self, conn: aiopg.Connection | None) -> bool:
        while self._waiters:
            fut = self._waiters.popleft()
            if fut.done():
                continue  # gave up (timeout, cancelled)
            if conn is not None:
                self._used.add(conn)
            fut.set_result(conn)
            return True
        return False

    def terminate(self) -> None:
        self.closed = True
        for conn in [*self._free, *self._used]:
            conn.close()
        self._free.clear()
        self._used.clear()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(RuntimeError("the pool was closed"))

    async def wait_closed(self) -> None:
        return None


async def create_pool(
    database: str,
    *,
    minsize: int = 1,
    maxsize: int = 10,
    timeout: float = 60.0,
    pool_recycle: float = -1.0,
    **connect: Any,
) -> Pool:
    pool = Pool(minsize, maxsize, timeout, pool_recycle, database=database, **connect)
    await pool.fill()
    return pool
