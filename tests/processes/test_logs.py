"""Log lines of a real server: JSON when asked, one access line per request, request ids, and no credential in
any line however it was sent (the socket URL's query string, an Authorization header, a body)."""

from __future__ import annotations

import asyncio
import json
import urllib.request

import jwt
import pytest
import websockets

from taxiload.harness import ServerProcess, call
from tests.support import PASSWORD
from tests.wsclient import connect

FIELDS = {"time", "level", "logger", "message", "worker"}


def get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


async def sockets(server: ServerProcess, access: str, forged: str) -> None:
    async with await connect(server.ws_url, access):
        pass
    with pytest.raises(websockets.exceptions.InvalidStatus):
        await websockets.connect(f"{server.ws_url}/taxi/?token={forged}")
    with pytest.raises(websockets.exceptions.InvalidStatus):
        await websockets.connect(f"{server.ws_url}/taxi/?token={access}&protocol=9")


def test_json_logs_have_one_object_per_line_an_access_line_per_request_and_no_secret(tmp_path):
    env = {
        "TAXI_DATABASE_URL": f"sqlite:///{tmp_path}/l.sqlite3",
        "TAXI_REDIS_URL": "",
        "TAXI_BCRYPT_ROUNDS": "4",
        "TAXI_MEDIA_ROOT": str(tmp_path / "media"),
        "TAXI_LOG_FORMAT": "json",
        "TAXI_ACCESS_LOG": "1",
        "TAXI_METRICS": "1",
        "TAXI_METRICS_TOKEN": "metrics-secret-4242",
    }
    forged = jwt.encode({"id": 1, "token_type": "access", "exp": 4102444800}, "x" * 32, algorithm="HS256")
    with ServerProcess(env) as server:
        body = {"username": "log@example.com", "password1": PASSWORD, "password2": PASSWORD, "group": "rider"}
        assert call(f"{server.url}/api/sign_up/", body)[0] == 201
        _, tokens = call(f"{server.url}/api/log_in/", {"username": "log@example.com", "password": PASSWORD})
        access, refresh = tokens["access"], tokens["refresh"]
        assert (
            call(f"{server.url}/api/log_in/", {"username": "log@example.com", "password": "wrong-" + PASSWORD})[0]
            == 401
        )
        status, renewed = call(f"{server.url}/api/token/refresh/", {"refresh": refresh})
        assert status == 200
        assert call(f"{server.url}/api/trip/", token=access)[0] == 200
        assert call(f"{server.url}/api/trip/", token=forged)[0] == 401
        assert call(f"{server.url}/api/trip/?token={access}&access={access}")[0] == 401
        assert get(f"{server.url}/metrics", {"Authorization": "Bearer metrics-secret-4242"})[0] == 200
        assert get(f"{server.url}/metrics", {"Authorization": "Bearer wrong-metrics-secret"})[0] == 401
        status, headers = get(f"{server.url}/api/health/", {"X-Request-ID": "trace-42.a"})
        assert (status, headers["X-Request-ID"]) == (200, "trace-42.a")
        status, headers = get(f"{server.url}/api/health/", {"X-Request-ID": "bad id\twith spaces"})
        assert status == 200 and len(headers["X-Request-ID"]) == 32  # not echoed: a fresh one
        asyncio.run(sockets(server, access, forged))
    output = server.output()
    secrets = [access, refresh, renewed["access"], renewed["refresh"], forged, PASSWORD, "metrics-secret-4242"]
    for secret in secrets:
        assert secret not in output
        for part in secret.split("."):
            if len(part) > 16:
                assert part not in output  # not even a piece of a token
    entries = [json.loads(line) for line in output.splitlines() if line.strip()]
    assert all(set(entry) >= FIELDS for entry in entries), [e for e in entries if not set(e) >= FIELDS]
    lines = [e for e in entries if e["logger"] == "taxi.access"]
    assert {"POST /api/sign_up/ 201", "GET /api/trip/ 200", "GET /api/trip/ 401", "GET /metrics 401"} <= {
        " ".join(e["message"].split()[:3]) for e in lines
    }
    traced = [e for e in lines if e.get("request_id") == "trace-42.a"]
    assert len(traced) == 1 and traced[0]["path"] == "/api/health/" and traced[0]["status"] == 200
    assert all(e["worker"].startswith("Sanic-Server-") for e in lines)
