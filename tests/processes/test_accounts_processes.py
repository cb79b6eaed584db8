"""Account deletion across processes: the sockets of a deleted user are closed on every server and worker."""

from __future__ import annotations

import asyncio

import pytest
from websockets.exceptions import ConnectionClosed

from taxiload.harness import ServerProcess, call
from tests.servers import server_env
from tests.support import PASSWORD
from tests.wsclient import WAIT, ask, connect


def account(base: str, username: str) -> dict:
    body = {"username": username, "password1": PASSWORD, "password2": PASSWORD, "group": "driver"}
    status, user = call(f"{base}/api/sign_up/", body)
    assert status == 201, user
    return user | call(f"{base}/api/log_in/", {"username": username, "password": PASSWORD})[1]


def test_deleting_through_one_server_closes_the_users_sockets_on_another(pg_database_url, tmp_path):
    env = server_env(pg_database_url, tmp_path)
    with ServerProcess(env) as a, ServerProcess(env, workers=2) as b:
        gone = account(a.url, "gone@example.com")
        stays = account(a.url, "stays@example.com")

        async def scenario():
            # Several sockets of the user on server b (its two workers share them), one of another user.
            sockets = [await connect(b.ws_url, gone["access"]) for _ in range(4)]
            async with await connect(b.ws_url, stays["access"]) as other:
                status, body = await asyncio.to_thread(
                    call, f"{a.url}/api/me/", {"password": PASSWORD}, gone["access"], "DELETE"
                )
                assert status == 204, body
                for ws in sockets:
                    with pytest.raises(ConnectionClosed) as closed:
                        await asyncio.wait_for(ws.recv(), WAIT)
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
                assert (await ask(other, "echo.message", "still here"))["data"] == "still here"

        asyncio.run(scenario())
        assert b.stop() == 0
    assert "Traceback" not in b.output(), b.output()
