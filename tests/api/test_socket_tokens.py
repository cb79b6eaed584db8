"""A version 2 socket held to its access token, against a real server: renewal with ``authenticate``, the tokens
it refuses, the 4001 close at expiry; version 1 sockets keep the handshake-only rule of the reference client.
"""

from __future__ import annotations

import time

import jwt
import pytest

from taxi.config import Settings
from taxi.security import ACCESS, CLOCK_LEEWAY, TokenIssuer
from tests.conftest import REDIS_URL, SECRET, make_settings
from tests.support import SyncDB, log_in
from tests.wsclient import WAIT, Live, ask, closed, connect, serving, still_open


@pytest.fixture
def settings(deployment) -> Settings:
    return deployment


@pytest.fixture
def sql(deployment) -> SyncDB:
    return SyncDB(deployment.database)


@pytest.fixture
def live(client) -> Live:
    return Live(client)


def test_a_version_2_socket_renews_its_token_and_is_closed_when_it_expires(pg_database_url, tmp_path):
    lifetime = 2
    settings = make_settings(pg_database_url, tmp_path, redis_url=REDIS_URL, access_token_lifetime=lifetime)
    with serving(settings) as live:
        rider = live.account("rider@example.com")
        first_exp = exp_of(rider["access"])

        async def open_sockets():
            token = rider["access"]
            renewed = await connect(live.base, token, protocol=2)
            left = await connect(live.base, token + "&protocol=2")  # opted in by the query string, never renewed
            return renewed, left, await connect(live.base, token)

        renewed, left, v1 = live.run(open_sockets())
        # A newer token: issued at least three seconds after the first, so it expires three seconds later.
        time.sleep(max(0.0, first_exp - lifetime + 3 - time.time()))
        newer = log_in(live.client, "rider@example.com")
        assert exp_of(newer["access"]) >= first_exp + 3

        async def scenario():
            assert await ask(renewed, "authenticate", {"token": newer["access"]}) == {
                "type": "authenticated",
                "data": {"exp": exp_of(newer["access"])},
            }
            # The first token is no longer accepted: the socket left with it is closed, 4001.
            frames, code, reason = await closed(left, timeout=WAIT + lifetime + CLOCK_LEEWAY)
            assert (frames, code, reason) == ([], 4001, "token expired")
            assert time.time() >= first_exp + CLOCK_LEEWAY - 0.05
            await still_open(renewed)
            await still_open(v1)  # version 1: checked at the handshake only, as the reference client expects
            frames, code, reason = await closed(renewed, timeout=WAIT + lifetime + 3)
            assert (frames, code, reason) == ([], 4001, "token expired")
            assert time.time() >= exp_of(newer["access"]) + CLOCK_LEEWAY - 0.05
            await still_open(v1)
            await v1.close()

        live.run(scenario())


def exp_of(token: str) -> int:
    return int(jwt.decode(token, options={"verify_signature": False})["exp"])


def test_only_a_valid_access_token_of_the_same_user_renews_a_socket(live, sql, deployment):
    rider = live.account("rider@example.com")
    other = live.account("other@example.com")
    expired = TokenIssuer(SECRET, -60, 60).issue(ACCESS, rider["id"])
    refused = {
        "another user's token": other["access"],
        "a refresh token": rider["refresh"],
        "an expired token": expired,
        "a token signed with another key": TokenIssuer("x" * 40, 60, 60).issue(ACCESS, rider["id"]),
        "garbage": "not-a-token",
        "an empty token": "",
    }

    async def scenario():
        async with await connect(live.base, rider["access"], protocol=2) as ws:
            for what, token in refused.items():
                reply = await ask(ws, "authenticate", {"token": token})
                assert reply["type"] == "error" and reply["data"]["code"] == "unauthorized", (what, reply)
                assert set(reply["data"]) == {"code", "detail"}, reply
            assert "another user" in (await ask(ws, "authenticate", {"token": other["access"]}))["data"]["detail"]
            reply = await ask(ws, "authenticate", {"token": 5})
            assert reply["data"]["code"] == "invalid" and "token" in reply["data"]["fields"], reply
            await still_open(ws)
            fresh = rider["access"]
            assert await ask(ws, "authenticate", {"token": fresh}) == {
                "type": "authenticated",
                "data": {"exp": exp_of(fresh)},
            }
            await still_open(ws)
        async with await connect(live.base, rider["access"]) as v1:
            reply = await ask(v1, "authenticate", {"token": rider["access"]})
            assert reply["data"]["code"] == "unknown_type" and "version 2" in reply["data"]["detail"], reply
        # Deactivated since connecting: renewing is a write like any other, refused and closed (1008).
        async with await connect(live.base, rider["access"], protocol=2) as ws:
            sql.execute("UPDATE taxi_user SET is_active = %s WHERE id = %s", (False, rider["id"]))
            reply = await ask(ws, "authenticate", {"token": rider["access"]})
            assert reply["data"]["code"] == "user_inactive", reply
            frames, code, _ = await closed(ws)
            assert (frames, code) == ([], 1008)

    live.run(scenario())
