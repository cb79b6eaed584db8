"""Hostile connections against a real server process: broken frames and request lines, and slow senders.

Each test reads the server's own log afterwards: bad input is the client's error, never a traceback."""

from __future__ import annotations

import asyncio

import pytest

from taxiload.harness import ServerProcess, call
from tests.servers import server_env
from tests.support import PASSWORD
from tests.wsclient import WAIT, RawSocket, connect, still_open


def account(base: str, username: str, group: str = "rider") -> dict:
    body = {"username": username, "password1": PASSWORD, "password2": PASSWORD, "group": group}
    status, user = call(f"{base}/api/sign_up/", body)
    assert status == 201, user
    return user | call(f"{base}/api/log_in/", {"username": username, "password": PASSWORD})[1]


@pytest.fixture
def server(pg_database_url, tmp_path):
    with ServerProcess(server_env(pg_database_url, tmp_path)) as server:
        yield server


BAD_UTF8 = [
    b'{"type":"echo.message","data":"\xff\xfe"}',
    b'{"type":"echo.message","data":"\xc3',  # a sequence cut short at the end of the message
    b"\xed\xa0\x80",  # an encoded surrogate
]


def test_invalid_utf8_in_a_text_frame_closes_with_1007_and_logs_no_traceback(server):
    user = account(server.url, "rider@example.com")

    async def scenario():
        async with await connect(server.ws_url, user["access"]) as bystander:
            codes = []
            for payload in BAD_UTF8 * 10:
                raw = await RawSocket.open("127.0.0.1", server.port, f"/taxi/?token={user['access']}")
                try:
                    await raw.send_frame(payload)
                    codes.append((await raw.read_until_closed(WAIT))[1])
                finally:
                    raw.close()
            await still_open(bystander)  # other sockets keep working
            return codes

    assert asyncio.run(scenario()) == [1007] * len(BAD_UTF8) * 10
    assert server.stop() == 0
    log = server.output()
    assert "Traceback" not in log and "UnicodeDecodeError" not in log and "never retrieved" not in log, log
