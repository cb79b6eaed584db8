"""A socket's message rate against a real server: refused messages are not processed, location fixes do not
count, a neighbour is not affected, and a socket that floods for ten seconds is closed with 1008.

The rules themselves, second by second, are tested without a server in tests/realtime/test_pace.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from taxiload.harness import TIMEOUT_SCALE
from tests.conftest import REDIS_URL, make_settings
from tests.wsclient import WAIT, Live, closed, connect, recv, send, serving, still_open, trip_request

FIX = {"lat": 52.52, "lng": 13.405}


@pytest.fixture
def one_per_second(deployment) -> Iterator[Live]:
    """A server whose sockets may send one message a second, in bursts of two (a flood: over ten a second)."""
    with serving(dataclasses.replace(deployment, ws_messages_per_s=1)) as live:
        yield live


def test_messages_past_the_rate_are_refused_and_not_processed(one_per_second, deployment):
    live = one_per_second
    rider = live.account("rider@example.com")

    async def scenario():
        async with await connect(live.base, rider["access"], ready=False) as ws:
            start = time.monotonic()
            await send(ws, "echo.message", "first")
            await send(ws, "echo.message", "second")
            for _ in range(10):
                await send(ws, "create.trip", trip_request())
            replies = [await recv(ws) for _ in range(12)]
            elapsed = time.monotonic() - start
            return replies, elapsed

    replies, elapsed = live.run(scenario())
    # The burst: two messages at once.
    assert replies[:2] == [{"type": "echo.message", "data": d} for d in ("first", "second")], replies
    created = [r["data"]["id"] for r in replies[2:] if r["type"] == "echo.message"]
    refused = [r for r in replies[2:] if r["type"] == "error"]
    assert len(created) + len(refused) == 10, replies
    assert refused, replies
    for reply in refused:
        assert set(reply["data"]) == {"code", "detail"} and reply["data"]["code"] == "rate_limited", reply
        assert "at most 1 a second" in reply["data"]["detail"]
    # Then one a second: never more than what the time since the first message refilled.
    assert len(created) <= elapsed, (created, elapsed)
    # A refused request created nothing: the rider's trips are exactly the ones answered.
    trips = live.get("/api/trip/", rider["access"]).json
    assert sorted(t["id"] for t in trips) == sorted(created)


def test_location_fixes_do_not_count_toward_the_rate(one_per_second):
    live = one_per_second
    driver = live.account("driver@example.com", "driver")

    async def scenario():
        async with await connect(live.base, driver["access"], ready=False, protocol=2) as ws:
            for _ in range(8):
                await send(ws, "update.location", FIX)
            # The bucket is still full: the burst of two passes, the third message is over the rate.
            for n in range(3):
                await send(ws, "echo.message", n)
            return [await recv(ws) for _ in range(3)]

    replies = live.run(scenario())
    assert replies[:2] == [{"type": "echo.message", "data": 0}, {"type": "echo.message", "data": 1}], replies


def test_a_socket_flooding_for_ten_seconds_is_closed_with_1008(pg_database_url, tmp_path):
    with serving(make_settings(pg_database_url, tmp_path, redis_url=REDIS_URL, ws_messages_per_s=1)) as live:
        rider = live.account("rider@example.com")
        neighbour = live.account("neighbour@example.com")

        async def flood(ws) -> int:
            sent = 0
            with contextlib.suppress(ConnectionClosed):
                while True:
                    await send(ws, "echo.message", sent)  # 40 a second: four times the flood line
                    sent += 1
                    await asyncio.sleep(1 / 40)
            return sent

        async def scenario():
            calm = await connect(live.base, neighbour["access"])
            # Not even the ready echo: the server's first one-second window starts at the first flood message.
            async with calm, await connect(live.base, rider["access"], ready=False) as ws:
                start = time.monotonic()
                sender = asyncio.create_task(flood(ws))
                frames, code, reason = await closed(ws, timeout=60 * TIMEOUT_SCALE)
                elapsed = time.monotonic() - start
                sent = await asyncio.wait_for(sender, WAIT)
                await still_open(calm)  # the neighbour on the same server was never affected
                return frames, code, reason, elapsed, sent

        frames, code, reason, elapsed, sent = live.run(scenario())
    assert (code, reason) == (1008, "message rate too high"), (code, reason, frames[-3:])
    assert elapsed >= 10, elapsed  # ten flood seconds must have passed on the server, after the client started
    codes = {f["data"]["code"] for f in frames if f["type"] == "error"}
    assert codes == {"rate_limited"}, codes
    assert frames[-1]["type"] == "error" and "closing" in frames[-1]["data"]["detail"], frames[-1]
    assert any(f["type"] == "echo.message" for f in frames)  # within the rate, messages were still processed
    assert len(frames) <= sent
