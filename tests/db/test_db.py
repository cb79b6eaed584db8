"""The database layer: the SQLite pool's bound and PRAGMAs, SQL text per backend, and outages as 503s."""

from __future__ import annotations

import asyncio

import pytest

from taxi import db as dbm
from taxi.errors import ServiceUnavailable


async def test_sqlite_pool_never_opens_more_than_its_size(sqlite_url):
    database = await dbm.connect(sqlite_url, pool_size=4)
    try:
        one = dbm.SQL("SELECT {p}")
        results = await asyncio.gather(*(dbm.fetch_all(one, (i,)) for i in range(60)))
        assert [rows[0][0] for rows in results] == list(range(60))
        assert 1 <= database.pool_backend.opened <= 4
    finally:
        await database.aio_close()


async def test_sqlite_connections_enforce_foreign_keys(sqlite_url):
    database = await dbm.connect(sqlite_url, pool_size=2)
    try:
        assert await dbm.fetch_all(dbm.SQL("PRAGMA foreign_keys")) == [(1,)]
        with pytest.raises(Exception, match="FOREIGN KEY"):
            await dbm.execute(
                dbm.SQL(
                    "INSERT INTO taxi_trip (id, created, updated, pick_up_address, drop_off_address, status, "
                    "rider_id) VALUES ('x', '', '', 'A', 'B', 'REQUESTED', 424242)"
                )
            )
    finally:
        await database.aio_close()


def test_sql_is_rendered_for_each_backend():
    statement = dbm.SQL("SELECT a FROM t WHERE b = {p} AND c = {p}", name="pick")
    assert statement.numbered() == "SELECT a FROM t WHERE b = $1 AND c = $2"
    assert statement.render("?") == "SELECT a FROM t WHERE b = ? AND c = ?"
    assert statement.render("%s") == "SELECT a FROM t WHERE b = %s AND c = %s"


async def test_an_unreachable_database_is_a_503_not_a_crash(tmp_path):
    from taxi.config import DatabaseURL

    url = DatabaseURL(backend="postgresql", name="taxi_nowhere", host="127.0.0.1", port=1)
    database = dbm.make_database(url, 1)
    dbm.db.initialize(database)
    with pytest.raises(ServiceUnavailable) as caught:
        await dbm.fetch_all(dbm.SQL("SELECT 1"))
    assert caught.value.status == 503 and caught.value.headers() == {"Retry-After": "1"}
    with pytest.raises(ServiceUnavailable):
        await dbm.execute(dbm.SQL("UPDATE taxi_user SET first_name = '' WHERE id = 0"))


async def test_postgresql_queries_leave_nothing_for_the_cyclic_collector(pg_database_url):
    import gc

    database = await dbm.connect(pg_database_url, pool_size=2)
    try:
        await dbm.fetch_all(dbm.SQL("SELECT 1"))  # the pool and its connections exist before counting
        gc.collect()
        gc.disable()
        gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection finds goes to gc.garbage instead of being freed
        try:
            for i in range(50):
                assert await dbm.fetch_all(dbm.SQL("SELECT {p}"), (i,)) == [(i,)]
            gc.collect()
            left = [type(o).__qualname__ for o in gc.garbage]
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
        # Each query used to leave aiopg's Cursor and Transaction in a cycle, only the collector could free.
        assert not [name for name in left if name in ("Cursor", "Transaction", "cursor")], left
    finally:
        await database.aio_close()
