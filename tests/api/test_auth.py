"""Sign-up, log-in, refresh and log-out over HTTP: the reference client's flows and every error path."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import secrets
import time

import httpx
import jwt
import pytest
from PIL import Image
from sanic_testing.reusable import ReusableClient

from taxi.app import create_app
from taxiload.harness import free_port
from tests.conftest import SECRET, make_settings
from tests.support import PASSWORD, bearer, log_in, png, sign_up


def claims_of(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "==")))


def test_user_can_sign_up_with_json(client, sql):
    body = sign_up(client, "user@example.com", first_name="Test", last_name="User")
    assert body == {
        "id": sql.user_id("user@example.com"),
        "username": "user@example.com",
        "first_name": "Test",
        "last_name": "User",
        "group": "rider",
        "photo": None,
        "photo_thumbnail": None,
    }
    stored = sql.fetch("SELECT password FROM taxi_user WHERE username = %s", ("user@example.com",))[0][0]
    assert stored.startswith("$2b$") and PASSWORD not in stored


def test_user_can_sign_up_with_a_photo_as_multipart(client, settings):
    _, resp = client.post(
        "/api/sign_up/",
        data={
            "username": "rider@example.com",
            "first_name": "Test",
            "last_name": "User",
            "password1": PASSWORD,
            "password2": PASSWORD,
            "group": "driver",
        },
        files={"photo": ("photo.png", png(), "image/png")},
    )
    assert resp.status == 201, resp.text
    photo, thumbnail = resp.json["photo"], resp.json["photo_thumbnail"]
    assert photo.startswith("/media/photos/") and photo.endswith(".png")
    assert thumbnail.startswith("/media/photos/") and thumbnail.endswith(".png") and thumbnail != photo
    _, got = client.get(photo)
    assert got.status == 200
    assert got.headers["content-type"] == "image/png"
    assert got.content == png()
    _, small = client.get(thumbnail)
    assert small.status == 200 and Image.open(io.BytesIO(small.content)).size == (256, 256)
    assert len(list((settings.media_root / "photos").iterdir())) == 2


def test_sign_up_refuses_bad_fields_with_one_message_list_per_field(client):
    _, resp = client.post(
        "/api/sign_up/",
        json={"username": "", "password1": "short", "password2": "short", "group": "pilot", "first_name": 7},
    )
    assert resp.status == 400
    assert set(resp.json) == {"username", "password1", "group", "first_name"}
    assert all(isinstance(v, list) and v and isinstance(v[0], str) for v in resp.json.values())


def test_sign_up_password_mismatch_is_a_non_field_error(client):
    _, resp = client.post(
        "/api/sign_up/",
        json={"username": "u1", "password1": PASSWORD, "password2": PASSWORD + "x", "group": "rider"},
    )
    assert resp.status == 400
    assert resp.json == {"non_field_errors": ["Passwords must match."]}


def test_sign_up_refuses_a_taken_username(client):
    sign_up(client, "taken@example.com")
    _, resp = client.post(
        "/api/sign_up/",
        json={"username": "taken@example.com", "password1": PASSWORD, "password2": PASSWORD, "group": "driver"},
    )
    assert resp.status == 400
    assert list(resp.json) == ["username"]


def test_sign_up_refuses_passwords_bcrypt_cannot_hash(client):
    long = "é" * 40  # 80 bytes in UTF-8: bcrypt 5 would raise
    _, resp = client.post(
        "/api/sign_up/", json={"username": "u2", "password1": long, "password2": long, "group": "rider"}
    )
    assert resp.status == 400
    assert "72 bytes" in resp.json["password1"][0]


def test_user_can_log_in_and_the_access_token_carries_the_user(client, sql):
    sign_up(client, "driver@example.com", group="driver", first_name="Dee", last_name="River")
    tokens = log_in(client, "driver@example.com")
    access = claims_of(tokens["access"])
    assert access["id"] == sql.user_id("driver@example.com")
    assert access["username"] == "driver@example.com"
    assert access["first_name"] == "Dee" and access["last_name"] == "River"
    assert access["group"] == "driver" and access["photo"] is None
    assert access["token_type"] == "access"
    assert access["exp"] - access["iat"] == 300
    refresh = claims_of(tokens["refresh"])
    assert refresh["token_type"] == "refresh" and refresh["id"] == access["id"]
    assert refresh["jti"] != access["jti"]
    # Signed with our key, HS256.
    jwt.decode(tokens["access"], SECRET, algorithms=["HS256"])


def test_wrong_password_and_unknown_user_get_the_same_401(client):
    sign_up(client, "someone@example.com")
    _, wrong = client.post("/api/log_in/", json={"username": "someone@example.com", "password": "nope-nope"})
    _, unknown = client.post("/api/log_in/", json={"username": "nobody@example.com", "password": "nope-nope"})
    assert wrong.status == unknown.status == 401
    assert wrong.json == unknown.json
    assert set(wrong.json) == {"detail"}


def test_inactive_user_cannot_log_in(client, sql):
    sign_up(client, "gone@example.com")
    sql.execute("UPDATE taxi_user SET is_active = %s WHERE username = %s", (False, "gone@example.com"))
    _, resp = client.post("/api/log_in/", json={"username": "gone@example.com", "password": PASSWORD})
    assert resp.status == 401


def test_refresh_gives_a_new_access_token(client):
    sign_up(client, "r@example.com")
    tokens = log_in(client, "r@example.com")
    _, resp = client.post("/api/token/refresh/", json={"refresh": tokens["refresh"]})
    assert resp.status == 200
    assert set(resp.json) == {"access", "refresh"}  # the reference client reads "access" only
    new = claims_of(resp.json["access"])
    assert new["token_type"] == "access" and new["username"] == "r@example.com"
    _, listed = client.get("/api/trip/", headers=bearer(resp.json["access"]))
    assert listed.status == 200


def test_refresh_refuses_access_tokens_garbage_and_expired_tokens(client, sql):
    sign_up(client, "r2@example.com")
    tokens = log_in(client, "r2@example.com")
    now = int(time.time())
    expired = jwt.encode(
        {"token_type": "refresh", "exp": now - 10, "iat": now - 100, "jti": "x", "id": 1}, SECRET, algorithm="HS256"
    )
    for bad in (tokens["access"], "garbage", expired, tokens["refresh"] + "x"):
        _, resp = client.post("/api/token/refresh/", json={"refresh": bad})
        assert resp.status == 401, bad
        assert set(resp.json) == {"detail"}
    _, missing = client.post("/api/token/refresh/", json={})
    assert missing.status == 400 and "refresh" in missing.json


def test_log_out_revokes_the_refresh_token(client):
    sign_up(client, "out@example.com")
    tokens = log_in(client, "out@example.com")
    _, resp = client.post("/api/log_out/", json={"refresh": tokens["refresh"]}, headers=bearer(tokens["access"]))
    assert resp.status == 204
    _, again = client.post("/api/token/refresh/", json={"refresh": tokens["refresh"]})
    assert again.status == 401
    # Another session of the same user is unaffected.
    other = log_in(client, "out@example.com")
    _, ok = client.post("/api/token/refresh/", json={"refresh": other["refresh"]})
    assert ok.status == 200


def test_log_out_needs_an_access_token_and_the_callers_own_refresh_token(client):
    sign_up(client, "a@example.com")
    sign_up(client, "b@example.com")
    a, b = log_in(client, "a@example.com"), log_in(client, "b@example.com")
    _, anonymous = client.post("/api/log_out/", json={"refresh": a["refresh"]})
    assert anonymous.status == 401
    _, foreign = client.post("/api/log_out/", json={"refresh": a["refresh"]}, headers=bearer(b["access"]))
    assert foreign.status == 403
    _, still = client.post("/api/token/refresh/", json={"refresh": a["refresh"]})
    assert still.status == 200


POSING = {
    "right-to-left override": "ad\u202enimda",
    "zero-width space": "ad\u200bmin",
    "zero-width joiner": "ad\u200dmin",
    "newline": "ad\nmin",
    "ANSI escape": "\x1b[31madmin",
    "Cyrillic a among Latin letters": "\u0430dmin",
    "Latin o among Cyrillic letters": "\u0438o\u0430\u043d",
    "Cyrillic letters that all look Latin": "\u0412\u0430\u0441\u043e",  # "Васо" reads as "Baco"
    "a space": "ad min",
    "a combining mark NFKC cannot compose": "q\u0301",
    "a dingbat digit": "user\u2776",
    "over 150 characters once normalised": "\ufdfa" * 10,  # one character, 18 after NFKC
}


@pytest.mark.parametrize("name", list(POSING))
def test_sign_up_refuses_a_username_that_could_pose_as_another(client, sql, name):
    body = {"username": POSING[name], "password1": PASSWORD, "password2": PASSWORD, "group": "rider"}
    _, resp = client.post("/api/sign_up/", json=body)
    assert resp.status == 400, (name, resp.text)
    assert list(resp.json) == ["username"] and resp.json["username"][0].startswith(("Enter a valid", "Ensure"))
    assert sql.fetch("SELECT COUNT(*) FROM taxi_user")[0][0] == 0


def test_composed_decomposed_fullwidth_and_case_variants_are_one_username(client):
    created = sign_up(client, "Jos\u00e9")  # composed é
    assert created["username"] == "Jos\u00e9"
    for variant in ("Jose\u0301", "JOS\u00c9", "jos\u00e9", "\uff2a\uff4f\uff53\u00e9"):  # decomposed, upper, fullwidth
        body = {"username": variant, "password1": PASSWORD, "password2": PASSWORD, "group": "driver"}
        _, resp = client.post("/api/sign_up/", json=body)
        assert resp.status == 400 and list(resp.json) == ["username"], variant
        # Log-in finds the one account whichever way its name is typed.
        tokens = log_in(client, variant)
        assert claims_of(tokens["access"])["username"] == "Jos\u00e9"
        assert claims_of(tokens["access"])["id"] == created["id"]


@pytest.mark.parametrize(
    "name",
    [
        "user.name+tag@example.com",
        "Jos\u00e9-Mar\u00eda_99",
        "\u0438\u0432\u0430\u043d",
        "\u5c71\u7530\u592a\u90ce",
        "\u03a9\u03bc\u03ad\u03b3\u03b1",
    ],
)
def test_letters_and_digits_of_one_script_are_accepted(client, name):
    assert sign_up(client, name)["username"] == name
    log_in(client, name)


def refresh(client, token: str):
    _, resp = client.post("/api/token/refresh/", json={"refresh": token})
    return resp


def test_a_refresh_rotates_the_refresh_token_and_retires_the_old_one(client):
    sign_up(client, "rot@example.com")
    first = log_in(client, "rot@example.com")["refresh"]
    resp = refresh(client, first)
    assert resp.status == 200 and claims_of(resp.json["refresh"])["token_type"] == "refresh"
    second = resp.json["refresh"]
    assert claims_of(second)["jti"] != claims_of(first)["jti"]
    # The new one works, and keeps rotating.
    third = refresh(client, second)
    assert third.status == 200
    assert refresh(client, third.json["refresh"]).status == 200


def test_a_retired_refresh_token_presented_again_revokes_every_refresh_token_of_its_user(client):
    sign_up(client, "victim@example.com")
    sign_up(client, "bystander@example.com")
    stolen = log_in(client, "victim@example.com")["refresh"]
    other_device = log_in(client, "victim@example.com")["refresh"]
    bystander = log_in(client, "bystander@example.com")["refresh"]
    rotated = refresh(client, stolen).json["refresh"]  # the legitimate client refreshes first
    reused = refresh(client, stolen)  # then the thief (or the client, replayed) presents the old one
    assert reused.status == 401 and set(reused.json) == {"detail"}
    for token in (rotated, other_device, stolen):
        assert refresh(client, token).status == 401
    # The user can log in again and refresh as usual; other users never noticed.
    assert refresh(client, log_in(client, "victim@example.com")["refresh"]).status == 200
    assert refresh(client, bystander).status == 200


def test_two_concurrent_refreshes_with_one_token_end_with_exactly_one_success(client):
    sign_up(client, "twice@example.com")

    async def race(token: str) -> list[int]:
        url = f"http://127.0.0.1:{client.port}/api/token/refresh/"
        async with httpx.AsyncClient() as http:
            answers = await asyncio.gather(*(http.post(url, json={"refresh": token}) for _ in range(2)))
        return sorted(answer.status_code for answer in answers)

    for _ in range(5):  # a fresh log-in each round: the loser revoked every refresh token of the user
        assert client._run(race(log_in(client, "twice@example.com")["refresh"])) == [200, 401]


def test_without_rotation_a_refresh_returns_an_access_token_only(database_url, tmp_path):
    settings = make_settings(database_url, tmp_path, rotate_refresh_tokens=False)
    app = create_app(settings, name=f"taxi_{secrets.token_hex(4)}")
    with ReusableClient(app, port=free_port()) as client:
        sign_up(client, "plain@example.com")
        token = log_in(client, "plain@example.com")["refresh"]
        for _ in range(2):
            resp = refresh(client, token)
            assert resp.status == 200 and set(resp.json) == {"access"}
