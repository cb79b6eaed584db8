"""Hostile connections against a real server process: broken frames and request lines, and slow senders.

Each test reads the server's own log afterwards: bad input is the client's error, never a traceback."""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time

import pytest

from taxiload.harness import TIMEOUT_SCALE, ServerProcess, call
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


class AnyStr:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and bool(other)


ANY_STR = AnyStr()

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


# Small limits, so that each slow client is cut off within seconds.
HEADER_TIMEOUT, BODY_GRACE, BODY_MIN_RATE = 2, 2, 1000


@pytest.fixture(scope="module")
def guarded(postgresql_url, tmp_path_factory):
    env = server_env(
        postgresql_url,
        tmp_path_factory.mktemp("guarded"),
        TAXI_HEADER_TIMEOUT=str(HEADER_TIMEOUT),
        TAXI_BODY_GRACE=str(BODY_GRACE),
        TAXI_BODY_MIN_RATE=str(BODY_MIN_RATE),
    )
    with ServerProcess(env) as server:
        yield server


def raw_connection(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)


def read_response(conn: socket.socket) -> tuple[bytes, bytes]:
    """Read one response (status line and headers, body by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"the server closed the connection without a response after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(
        next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head, body


def closed_by_server(conn: socket.socket) -> bool:
    try:
        return conn.recv(1) == b""
    except ConnectionResetError:
        return True


def trickle_until_answered(conn: socket.socket, piece: bytes, every: float = 0.5, at_most: int = 80) -> bytes:
    """Send ``piece`` every ``every`` s until the server answers (returns what it sent first), for at most
    ``at_most`` pieces: far longer than any limit the server was given."""
    for _ in range(at_most):
        ready, _, _ = select.select([conn], [], [], every)
        if ready:
            return conn.recv(65536)
        try:
            conn.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            return conn.recv(65536)
    raise AssertionError(f"the server still waits after {at_most} pieces, {at_most * every:g} s")


def test_headers_sent_a_line_at_a_time_are_cut_off_with_408(guarded):
    with raw_connection(guarded) as conn:
        conn.sendall(b"GET /api/health/ HTTP/1.1\r\nHost: x\r\n")
        answer = trickle_until_answered(conn, b"X-Slow: yes\r\n")
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b'"detail"' in answer
        assert closed_by_server(conn)
    assert "Traceback" not in guarded.output(), guarded.output()


def test_a_body_sent_a_byte_at_a_time_is_cut_off_with_408(guarded):
    with raw_connection(guarded) as conn:
        conn.sendall(
            b"POST /api/log_in/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100000\r\n\r\n{"
        )
        answer = trickle_until_answered(conn, b" ")
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b'"detail"' in answer
        assert closed_by_server(conn)
    assert "Traceback" not in guarded.output(), guarded.output()


def test_a_connection_that_sends_nothing_is_closed(guarded):
    with raw_connection(guarded) as conn:
        conn.settimeout(HEADER_TIMEOUT * 10 * TIMEOUT_SCALE)  # far past the header limit, short of Sanic's 120 s
        assert closed_by_server(conn)
    assert "Traceback" not in guarded.output(), guarded.output()


def test_a_body_faster_than_the_minimum_rate_and_an_idle_keep_alive_are_served(guarded):
    login = b'{"username": "nobody@example.com", "password": "wrong password"}'
    body = login + b" " * (6000 - len(login))  # 3 s at 2000 bytes/s: past the grace, above the minimum rate
    with raw_connection(guarded) as conn:
        conn.sendall(b"GET /api/health/ HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(conn)[0].startswith(b"HTTP/1.1 200")
        time.sleep(HEADER_TIMEOUT + 1)  # idle between requests: the keep-alive limit applies, not the header one
        conn.sendall(
            b"POST /api/log_in/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        for start in range(0, len(body), 500):
            conn.sendall(body[start : start + 500])
            time.sleep(0.25)
        head, answer = read_response(conn)
        assert head.startswith(b"HTTP/1.1 401"), (head, answer)


@pytest.mark.parametrize(
    "target",
    [b"/media/photos/x.png\x00.txt", b"/api/health/\x01", b"/api/he\x7falth/", b"/api/trip/?limit=\x1b[2J"],
)
def test_a_control_byte_in_the_request_line_gets_400_and_no_traceback(guarded, target):
    before = len(guarded.output())
    with raw_connection(guarded) as conn:
        conn.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        head, body = read_response(conn)
    assert head.startswith(b"HTTP/1.1 400"), head
    assert json.loads(body) == {"non_field_errors": [ANY_STR]}
    logged = guarded.output()[before:]
    assert "Traceback" not in logged and len(logged.splitlines()) <= 1, logged
    assert not any(chr(c) in logged for c in (0, 1, 0x7F, 0x1B)), logged
