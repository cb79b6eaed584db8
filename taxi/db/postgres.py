"""PostgreSQL through aiopg: hot reads as prepared statements, and dead connections never handed out twice."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import peewee
import peewee_async
import psycopg2
from peewee_async.connection import connection_context
from peewee_async.pool import AioPgPoolBackend

from taxi.db import pgpool
from taxi.db.outage import is_lost_connection, outage_as_unavailable
from taxi.db.statements import SQL
from taxi.db.usage import CountingPool

Work = Callable[[Any, Any], Awaitable[Any]]  # (connection, cursor) -> result

_DRIVER_FAILURES = (RuntimeError, psycopg2.OperationalError, psycopg2.InterfaceError)


def _untie(cursor: Any) -> None:
    """aiopg's Cursor and its Transaction point at each other, so every query left a reference cycle of four
    objects (with the psycopg2 cursor) that only the cyclic collector could free. Under load they were nearly all
    a worker's young collections found (``scripts/bench_photos``: 10,000 objects every few seconds, 8-10 ms each).
    The cursor is done with: cut the cycle, and reference counting frees it at once."""
    if hasattr(cursor, "_transaction"):
        cursor._transaction = None


class _CountingAioPgPool(CountingPool, AioPgPoolBackend):
    """aiopg connections in our pool (``taxi.db.pgpool``: no lock convoy under load), counting connections in use
    and waiters for the metrics."""

    async def create(self) -> None:
        params = dict(self.connect_params)
        if "connect_timeout" in params:
            params["timeout"] = params.pop("connect_timeout")
        self.pool = await pgpool.create_pool(database=self.database, **params)


class PostgresqlDatabase(peewee_async.PostgresqlDatabase):
    """aiopg with two repairs and one speed-up.

    - A connection the server dropped is closed, not returned to the pool for the next request.
    - Under uvloop a dead connection fails with RuntimeError ("the handler is closed"), which peewee does not
      translate: it becomes an outage (503) like any other lost connection.
    - ``fetch`` runs a named read as a server-side prepared statement, planned once per connection.
    """

    pool_backend_cls = _CountingAioPgPool

    async def aio_execute_sql(self, sql: str, params: Sequence[Any] | None = None, fetch_results: Any = None) -> Any:
        async def work(connection: Any, cursor: Any) -> Any:
            await cursor.execute(sql, params or ())
            return await fetch_results(self, cursor) if fetch_results is not None else None

        return await self.run(work, read=False)

    async def fetch(self, statement: SQL, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Every row of a read. Named statements are prepared once per connection: PostgreSQL then plans the
        trip joins once, not on every request (planning them costs more than running them)."""
        name = statement.name

        async def work(connection: Any, cursor: Any) -> Any:
            if name:
                prepared: set[str] | None = getattr(connection, "_taxi_prepared", None)
                if prepared is None:
                    prepared = connection._taxi_prepared = set()
                if name not in prepared:
                    await cursor.execute(f"PREPARE {name} AS {statement.numbered()}")
                    prepared.add(name)
                arguments = f" ({', '.join(['%s'] * len(params))})" if params else ""
                await cursor.execute(f"EXECUTE {name}{arguments}", params)
            else:
                await cursor.execute(statement.render("%s"), params)
            return await cursor.fetchall()

        return list(await self.run(work, read=True) or [])

    async def run(self, work: Work, *, read: bool) -> Any:
        """Run ``work`` on a pooled connection; an outage raises ServiceUnavailable.

        A read outside a transaction is tried once more on a fresh connection: after a database restart every
        pooled connection is dead, and no client should see that once the database is back.
        """
        with outage_as_unavailable():
            if read and connection_context.get() is None:
                try:
                    return await self._run_once(work)
                except (peewee.OperationalError, peewee.InterfaceError):
                    pass
            return await self._run_once(work)

    async def _run_once(self, work: Work) -> Any:
        try:
            with peewee.__exception_wrapper__:  # type: ignore[attr-defined]
                async with self.aio_connection() as connection:
                    try:
                        async with connection.cursor() as cursor:
                            try:
                                return await work(connection, cursor)
                            finally:
                                _untie(cursor)
                    except _DRIVER_FAILURES:
                        connection.close()  # never hand this connection out again
                        raise
        except RuntimeError as exc:
            if not is_lost_connection(exc):
                raise  # a programming error, not an outage
            raise peewee.OperationalError(f"database connection lost: {exc}") from exc
