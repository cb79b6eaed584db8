"""The database layer: the SQLite pool's bound, and SQL text rendered per backend."""

from __future__ import annotations

import asyncio
import os

from taxi import db as dbm


def open_handles(path: str) -> int:
    """How many file descriptors of this process have ``path`` open (the kernel's view: one per SQLite connection)."""
    target = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == target
        except OSError:
            pass  # closed since it was listed
    return count


async def test_sqlite_pool_never_opens_more_than_its_size(sqlite_url):
    before = open_handles(sqlite_url.name)
    database = await dbm.connect(sqlite_url, pool_size=4)
    try:
        one = dbm.SQL("SELECT {p}")
        results = await asyncio.gather(*(dbm.fetch_all(one, (i,)) for i in range(60)))
        assert [rows[0][0] for rows in results] == list(range(60))
        assert 1 <= open_handles(sqlite_url.name) - before <= 4
    finally:
        await database.aio_close()
    assert open_handles(sqlite_url.name) == before  # and closing closes them all


def test_sql_is_rendered_for_each_backend():
    statement = dbm.SQL("SELECT a FROM t WHERE b = {p} AND c = {p}", name="pick")
    assert statement.numbered() == "SELECT a FROM t WHERE b = $1 AND c = $2"
