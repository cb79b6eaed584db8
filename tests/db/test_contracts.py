"""Contracts with peewee and peewee-async internals that the database layer relies on.

Each test names the internal it pins; when an upgrade changes one, the test says which override to revisit
(taxi/db/sqlite.py, taxi/db/postgres.py, taxi/db/outage.py).
"""

from __future__ import annotations

import asyncio
import inspect

import peewee
import peewee_async.databases
import psycopg2
import pytest
import uvloop
from peewee_async.connection import connection_context
from peewee_async.pool import PoolBackend

from taxi import db as dbm
from taxi.db.sqlite import SqlitePool
from taxi.errors import ServiceUnavailable
from taxi.models import User
from tests.support import SyncDB


def test_our_sqlite_pool_implements_every_abstract_method_of_pool_backend():
    # SqlitePool subclasses PoolBackend; a new abstract method would make it uninstantiable at start-up.
    assert PoolBackend.__abstractmethods__ <= set(vars(SqlitePool))
    assert issubclass(dbm.SqliteDatabase.pool_backend_cls, SqlitePool)


async def test_peewee_async_uses_the_pool_class_we_give_it(sqlite_url):
    database = await dbm.connect(sqlite_url, pool_size=2)
    try:
        await dbm.fetch_all(dbm.SQL("SELECT 1"))
        assert isinstance(database.pool_backend, SqlitePool)
    finally:
        await database.aio_close()


def test_model_queries_go_through_aio_execute_sql_with_the_signature_we_override():
    # PostgresqlDatabase and SqliteDatabase override aio_execute_sql to turn outages into 503s; peewee-async's
    # models must still call it, with (sql, params, fetch_results).
    params = list(inspect.signature(peewee_async.databases.AioDatabase.aio_execute_sql).parameters)
    assert params == ["self", "sql", "params", "fetch_results"]
    assert "aio_execute_sql" in inspect.getsource(peewee_async.databases.AioDatabase.aio_execute)


def test_peewee_translates_driver_errors_through_its_exception_wrapper():
    # taxi/db/postgres.py wraps its own cursor work in peewee.__exception_wrapper__ (private).
    with pytest.raises(peewee.OperationalError), peewee.__exception_wrapper__:  # type: ignore[attr-defined]
        raise psycopg2.OperationalError("server closed the connection unexpectedly")


async def test_the_connection_context_tells_a_transaction_apart(sqlite_url):
    # Reads are retried only outside a transaction: the override reads peewee-async's connection_context.
    database = await dbm.connect(sqlite_url, pool_size=2)
    try:
        assert connection_context.get() is None
        async with database.aio_atomic():
            assert connection_context.get() is not None
        assert connection_context.get() is None
    finally:
        await database.aio_close()


def _kill_connections(url) -> int:
    admin = SyncDB(url)
    rows = admin.fetch(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
        (url.name,),
    )
    return len(rows)


def test_dead_pooled_connections_under_uvloop_are_an_outage_once_and_then_replaced(pg_database_url):
    # The production loop is uvloop: there a connection whose server went away fails with
    # RuntimeError("... handler is closed") (taxi/db/outage.py:is_lost_connection) rather than a driver error.
    async def scenario():
        database = await dbm.connect(pg_database_url, pool_size=2)
        try:
            assert await dbm.fetch_all(dbm.SQL("SELECT 1", name="taxi_contract_one")) == [(1,)]
            assert _kill_connections(pg_database_url) >= 1
            await asyncio.sleep(0.2)
            # A read is tried again on a fresh connection: the client never sees the restart.
            assert await dbm.fetch_all(dbm.SQL("SELECT 1", name="taxi_contract_one")) == [(1,)]
            # A connection that dies while held (here: one task's connection block, where nothing is retried)
            # fails as a 503, and is discarded rather than handed to the next request.
            with pytest.raises(ServiceUnavailable):
                async with database.aio_connection():
                    await User.update(first_name="x").where(User.id == 0).aio_execute()
                    assert _kill_connections(pg_database_url) >= 1
                    await asyncio.sleep(0.2)
                    await User.update(first_name="y").where(User.id == 0).aio_execute()
            assert await User.update(first_name="x").where(User.id == 0).aio_execute() == 0
        finally:
            await database.aio_close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
