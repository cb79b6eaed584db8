"""How busy a worker's database pool is: connections handed out, and tasks waiting for one (for the metrics)."""

from __future__ import annotations

from typing import Any

from peewee_async.pool import PoolBackend
from peewee_async.utils import ConnectionProtocol


class CountingPool(PoolBackend):
    """A pool backend mixin that counts connections in use and acquirers waiting, whatever the backend."""

    in_use = 0
    waiting = 0

    async def acquire(self) -> ConnectionProtocol:
        self.waiting += 1
        try:
            conn = await super().acquire()
        finally:
            self.waiting -= 1
        self.in_use += 1
        return conn

    async def release(self, conn: ConnectionProtocol) -> None:
        self.in_use -= 1
        await super().release(conn)


def pool_usage(database: Any) -> tuple[int, int]:
    """(connections in use, tasks waiting for one) of a database's pool; zeros for a pool that does not count."""
    pool = getattr(database, "pool_backend", None)
    if isinstance(pool, CountingPool):
        return pool.in_use, pool.waiting
    return 0, 0
