"""Keepalive pings: one timer per worker pings every socket; a peer that stops answering is closed with 1011,
one that answers stays open."""

from __future__ import annotations

import dataclasses
import uuid

from tests.wsclient import WAIT, Live, RawSocket, connect, silent, still_open


def test_a_peer_that_answers_no_ping_is_closed_and_one_that_answers_stays_open(settings):
    from sanic_testing.reusable import ReusableClient

    from taxi.app import create_app
    from taxiload.harness import free_port

    app = create_app(dataclasses.replace(settings, ws_ping_interval=1), name=f"taxi_ping_{uuid.uuid4().hex[:6]}")
    with ReusableClient(app, port=free_port()) as client:
        live = Live(client)
        driver, rider = live.account("d@example.com", "driver"), live.account("r@example.com")

        async def scenario():
            # A bare TCP client that reads frames but never answers a ping: a phone gone without a FIN looks the same.
            mute = await RawSocket.open("127.0.0.1", client.port, f"/taxi/?token={driver['access']}")
            async with await connect(live.base, rider["access"]) as answering:  # websockets answers pings itself
                frames, code = await mute.read_until_closed(WAIT)
                mute.close()
                assert code == 1011, (frames, code)
                assert frames >= 1  # the ping it did not answer
                # Two more intervals: the socket that answers is pinged again and kept.
                assert await silent(answering, 2.5)
                await still_open(answering)

        live.run(scenario())
