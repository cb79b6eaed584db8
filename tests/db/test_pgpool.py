"""The PostgreSQL pool on a real server: bounded, fair to waiters, never hands out a connection mid-transaction, gives
up after its timeout, and fails its waiters when closed."""

import asyncio
import time

import pytest

from taxi.db import pgpool


@pytest.fixture
async def pool(postgresql_url):
    made = []

    async def make(maxsize=2, timeout=5.0):
        pool = await pgpool.create_pool(
            postgresql_url.name,
            minsize=1,
            maxsize=maxsize,
            timeout=timeout,
            host=postgresql_url.host,
            port=postgresql_url.port,
            user=postgresql_url.user,
        )
        made.append(pool)
        return pool

    yield make
    for pool in made:
        pool.terminate()


async def query(pool, sql="SELECT 1"):
    conn = await pool.acquire()
    try:
        async with conn.cursor() as cursor:
            await cursor.execute(sql)
            return await cursor.fetchone()
    finally:
        pool.release(conn)


async def backends(pool):
    conn = await pool.acquire()
    try:
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
            return (await cursor.fetchone())[0]
    finally:
        pool.release(conn)


async def test_many_concurrent_queries_share_at_most_maxsize_connections(pool):
    p = await pool(maxsize=3)
    results = await asyncio.gather(*(query(p, "SELECT pg_sleep(0.01), 7") for _ in range(60)))
    assert [row[1] for row in results] == [7] * 60
    assert p.size == 3
    assert len(p._used) == 0


async def test_a_released_connection_goes_to_the_oldest_waiter(pool):
    p = await pool(maxsize=1)
    held = await p.acquire()
    order = []

    async def wait(name):
        conn = await p.acquire()
        order.append(name)
        p.release(conn)

    waiters = [asyncio.create_task(wait(name)) for name in ("first", "second", "third")]
    await asyncio.sleep(0.05)
    assert order == []
    p.release(held)
    await asyncio.gather(*waiters)
    assert order == ["first", "second", "third"]


async def test_a_connection_left_in_a_transaction_is_closed_not_reused(pool):
    p = await pool(maxsize=1)
    conn = await p.acquire()
    async with conn.cursor() as cursor:
        await cursor.execute("BEGIN")
        await cursor.execute("SELECT 1")
    p.release(conn)
    assert conn.closed
    fresh = await p.acquire()
    assert fresh is not conn
    async with fresh.cursor() as cursor:
        await cursor.execute("SELECT txid_current_if_assigned() IS NULL")
        assert (await cursor.fetchone())[0] is True  # not inside the abandoned transaction
    p.release(fresh)


async def test_a_waiter_gives_up_after_the_timeout_and_the_pool_still_works(pool):
    p = await pool(maxsize=1, timeout=0.2)
    held = await p.acquire()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await p.acquire()
    assert 0.15 < time.monotonic() - started < 2
    p.release(held)
    assert await query(p) == (1,)
    assert await backends(p) >= 1


async def test_a_closed_pool_refuses_and_fails_its_waiters(pool):
    p = await pool(maxsize=1)
    held = await p.acquire()
    waiter = asyncio.create_task(p.acquire())
    await asyncio.sleep(0.05)
    p.terminate()
    with pytest.raises(RuntimeError):
        await waiter
    with pytest.raises(RuntimeError):
        await p.acquire()
    assert held.closed
