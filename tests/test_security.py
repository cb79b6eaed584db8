"""Hostile tokens: each one refused over HTTP (401) and at the WebSocket handshake (401, never opened)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from urllib.parse import quote

import jwt
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.conftest import SECRET
from tests.support import bearer, log_in, sign_up


def b64(data: dict | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(user_id: int, **extra) -> dict:
    now = int(time.time())
    base = {
        "token_type": "access",
        "exp": now + 300,
        "iat": now,
        "jti": "j" * 32,
        "id": user_id,
        "username": "rider@example.com",
        "group": "rider",
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def hs512(payload: dict) -> str:
    """A token properly signed with our key, but with an algorithm we do not accept."""
    signing_input = f"{b64({'alg': 'HS512', 'typ': 'JWT'})}.{b64(payload)}"
    digest = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha512).digest()
    return f"{signing_input}.{b64(digest)}"


def hostile_tokens(user: dict) -> dict[str, str]:
    uid = user["id"]
    good = jwt.encode(claims(uid), SECRET, algorithm="HS256")
    header, payload, signature = good.split(".")
    now = int(time.time())
    return {
        "alg none": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        "alg none, signature kept": f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.{signature}",
        "another key": jwt.encode(claims(uid), "another-secret-" + "x" * 40, algorithm="HS256"),
        "HS512 with our key": hs512(claims(uid)),
        "RS256 header (HS/RS confusion)": f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{payload}.{signature}",
        "tampered payload": f"{header}.{b64(claims(uid + 1))}.{signature}",
        "tampered group": f"{header}.{b64(claims(uid, group='driver'))}.{signature}",
        "expired": jwt.encode(claims(uid, exp=now - 30, iat=now - 330), SECRET, algorithm="HS256"),
        "non-ASCII": "\u00ff" + good,
        "issued in the future": jwt.encode(claims(uid, iat=now + 3600, exp=now + 7200), SECRET, algorithm="HS256"),
        "not yet valid (nbf)": jwt.encode(claims(uid, nbf=now + 3600), SECRET, algorithm="HS256"),
        "refresh used as access": user["refresh"],
        "no exp": jwt.encode(claims(uid, exp=None), SECRET, algorithm="HS256"),
        "no type": jwt.encode(claims(uid, token_type=None), SECRET, algorithm="HS256"),
        "boolean id": jwt.encode(claims(True), SECRET, algorithm="HS256"),
        "unknown user": jwt.encode(claims(987654), SECRET, algorithm="HS256"),
        "empty": "",
        "garbage": "not.a.token",
        "huge": "a" * 3000,
    }


@pytest.fixture
def rider(client):
    return sign_up(client, "rider@example.com") | log_in(client, "rider@example.com")


def handshake_status(client, token: str) -> int:
    async def attempt() -> int:
        try:
            ws = await websockets.connect(f"ws://127.0.0.1:{client.port}/taxi/?token={quote(token)}", open_timeout=5)
        except InvalidStatus as err:
            return err.response.status_code
        await ws.close()
        return 101

    return client._run(attempt())


def test_every_hostile_token_is_refused_over_http_and_at_the_handshake(client, rider):
    # The genuine token works on both, so each refusal below is about the token alone.
    assert client.get("/api/trip/", headers=bearer(rider["access"]))[1].status == 200
    assert handshake_status(client, rider["access"]) == 101
    for name, token in hostile_tokens(rider).items():
        # A non-ASCII header value goes out as the raw bytes a hostile client would send.
        headers = {"Authorization": f"Bearer {token}".encode("latin-1")} if token else {}
        _, resp = client.get("/api/trip/", headers=headers)
        assert resp.status == 401, name
        assert set(resp.json) == {"detail"}, name
        assert handshake_status(client, token) == 401, name


def test_access_token_used_as_refresh_and_revoked_refresh_are_refused(client, rider):
    _, resp = client.post("/api/token/refresh/", json={"refresh": rider["access"]})
    assert resp.status == 401
    _, out = client.post("/api/log_out/", json={"refresh": rider["refresh"]}, headers=bearer(rider["access"]))
    assert out.status == 204
    _, resp = client.post("/api/token/refresh/", json={"refresh": rider["refresh"]})
    assert resp.status == 401 and set(resp.json) == {"detail"}


def test_deactivated_and_deleted_users_are_refused_at_the_handshake(client, sql, rider):
    driver = sign_up(client, "driver@example.com", group="driver") | log_in(client, "driver@example.com")
    sql.execute("UPDATE taxi_user SET is_active = %s WHERE id = %s", (False, rider["id"]))
    sql.execute("DELETE FROM taxi_user WHERE id = %s", (driver["id"],))
    assert handshake_status(client, rider["access"]) == 401
    assert handshake_status(client, driver["access"]) == 401


@pytest.mark.parametrize("user_id", [10**30, -(10**30), 2**63, 0, -1])
def test_a_signed_token_naming_an_impossible_user_id_is_401_not_500(client, rider, user_id):
    # Signed with our key, so only the id is wrong: one no database column can hold, or no user can have.
    now = int(time.time())
    access = jwt.encode(claims(user_id), SECRET, algorithm="HS256")
    refresh = jwt.encode(claims(user_id, token_type="refresh", exp=now + 3600), SECRET, algorithm="HS256")
    _, listed = client.get("/api/trip/", headers=bearer(access))
    assert listed.status == 401 and set(listed.json) == {"detail"}
    assert handshake_status(client, access) == 401
    _, refreshed = client.post("/api/token/refresh/", json={"refresh": refresh})
    assert refreshed.status == 401 and set(refreshed.json) == {"detail"}
    _, out = client.post("/api/log_out/", json={"refresh": refresh}, headers=bearer(rider["access"]))
    assert out.status in (401, 403) and set(out.json) == {"detail"}


def test_a_signed_token_with_an_oversized_jti_is_401_not_500(client, rider):
    # The jti is stored when the token is revoked: one longer than the column must be refused, not crash.
    now = int(time.time())
    refresh = jwt.encode(
        claims(rider["id"], token_type="refresh", exp=now + 3600, jti="j" * 500), SECRET, algorithm="HS256"
    )
    _, out = client.post("/api/log_out/", json={"refresh": refresh}, headers=bearer(rider["access"]))
    assert out.status == 401 and set(out.json) == {"detail"}
    _, refreshed = client.post("/api/token/refresh/", json={"refresh": refresh})
    assert refreshed.status == 401 and set(refreshed.json) == {"detail"}
