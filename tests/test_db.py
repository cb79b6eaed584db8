"""The database layer: the SQLite pool's bound, and SQL text rendered per backend."""

from __future__ import annotations

import asyncio

from taxi import db as dbm


async def test_sqlite_pool_never_opens_more_than_its_size(sqlite_url):
    database = await dbm.connect(sqlite_url, pool_size=4)
    try:
        one = dbm.SQL("SELECT {p}")
        results = await asyncio.gather(*(dbm.fetch_all(one, (i,)) for i in range(60)))
        assert [rows[0][0] for rows in results] == list(range(60))
        pool = database.pool_backend
        assert 1 <= len(pool._all) <= 4
    finally:
        await database.aio_close()


def test_sql_is_rendered_for_each_backend():
    statement = dbm.SQL("SELECT a FROM t WHERE b = {p} AND c = {p}", name="pick")
    assert statement.numbered() == "SELECT a FROM t WHERE b = $1 AND c = $2"
