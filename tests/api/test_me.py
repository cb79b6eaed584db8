"""The caller's own account: read it, rename it, replace its photo, delete it (and what the others then see)."""

from __future__ import annotations

import asyncio
import io

import httpx
import jwt
import pytest
from PIL import Image
from websockets.exceptions import ConnectionClosed

from tests.conftest import SECRET
from tests.support import PASSWORD, bearer, log_in, png, sign_up
from tests.wsclient import WAIT, Live, connect


def upload(client, token: str, body: bytes, name: str = "me.png", ctype: str = "image/png"):
    return client.put("/api/me/photo/", headers=bearer(token), files={"photo": (name, body, ctype)})[1]


def account(client, username: str, group: str = "rider") -> tuple[dict, dict]:
    user = sign_up(client, username, group=group)
    return user, log_in(client, username)


def stored(settings) -> set[str]:
    folder = settings.media_root / "photos"
    return {path.name for path in folder.iterdir()} if folder.exists() else set()


def test_me_is_the_callers_user_json_and_needs_a_token(client):
    user, tokens = account(client, "ana@example.com")
    _, resp = client.get("/api/me/", headers=bearer(tokens["access"]))
    assert resp.status == 200 and resp.json == user
    assert user["photo_thumbnail"] is None
    _, anonymous = client.get("/api/me/")
    assert anonymous.status == 401 and set(anonymous.json) == {"detail"}


def test_renaming_changes_the_names_everywhere_they_are_shown(client, sql):
    rider, tokens = account(client, "ana@example.com")
    trip = sql.add_trip(rider["id"])
    headers = bearer(tokens["access"])
    _, resp = client.patch("/api/me/", headers=headers, json={"first_name": "Ana Maria"})
    assert resp.status == 200, resp.text
    assert (resp.json["first_name"], resp.json["last_name"]) == ("Ana Maria", "User")
    _, resp = client.patch("/api/me/", headers=headers, json={"last_name": "Lima"})
    assert (resp.json["first_name"], resp.json["last_name"]) == ("Ana Maria", "Lima")
    assert client.get("/api/me/", headers=headers)[1].json == resp.json
    _, shown = client.get(f"/api/trip/{trip}/", headers=headers)
    assert shown.json["rider"] == resp.json
    # A fresh access token carries the new names (the reference client reads them from it).
    claims = jwt.decode(log_in(client, "ana@example.com")["access"], SECRET, algorithms=["HS256"])
    assert (claims["first_name"], claims["last_name"]) == ("Ana Maria", "Lima")


@pytest.mark.parametrize(
    "body,field",
    [
        ({"username": "other"}, "username"),
        ({"first_name": "x" * 151}, "first_name"),
        ({"last_name": 5}, "last_name"),
        ({"first_name": "a\x00b"}, "first_name"),
    ],
)
def test_a_bad_rename_is_a_400_on_its_field_and_changes_nothing(client, body, field):
    user, tokens = account(client, "ana@example.com")
    _, resp = client.patch("/api/me/", headers=bearer(tokens["access"]), json=body)
    assert resp.status == 400 and list(resp.json) == [field], resp.text
    assert client.get("/api/me/", headers=bearer(tokens["access"]))[1].json == user


def test_a_new_photo_replaces_the_old_files_and_shows_in_open_trips(client, settings, sql):
    rider, tokens = account(client, "ana@example.com")
    driver, _ = account(client, "dan@example.com", "driver")
    trip = sql.add_trip(rider["id"], driver["id"], status="STARTED")
    first = upload(client, tokens["access"], png(300, 200))
    assert first.status == 200, first.text
    old = {first.json["photo"].rsplit("/", 1)[1], first.json["photo_thumbnail"].rsplit("/", 1)[1]}
    assert stored(settings) == old
    second = upload(client, tokens["access"], png(50, 80, "JPEG"), "new.jpg", "image/jpeg")
    assert second.status == 200, second.text
    new = second.json
    assert new["photo"].endswith(".jpg") and new["photo_thumbnail"].endswith(".jpg")
    assert stored(settings) == {new["photo"].rsplit("/", 1)[1], new["photo_thumbnail"].rsplit("/", 1)[1]}
    assert client.get(first.json["photo"])[1].status == 404
    assert client.get(new["photo"])[1].status == 200
    assert client.get("/api/me/", headers=bearer(tokens["access"]))[1].json == new
    driver_tokens = log_in(client, "dan@example.com")
    _, seen = client.get(f"/api/trip/{trip}/", headers=bearer(driver_tokens["access"]))
    assert seen.json["rider"]["photo"] == new["photo"]
    assert seen.json["rider"]["photo_thumbnail"] == new["photo_thumbnail"]
    claims = jwt.decode(log_in(client, "ana@example.com")["access"], SECRET, algorithms=["HS256"])
    assert (claims["photo"], claims["photo_thumbnail"]) == (new["photo"], new["photo_thumbnail"])


def test_a_bad_new_photo_is_a_400_and_keeps_the_old_one(client, settings):
    _, tokens = account(client, "ana@example.com")
    kept = upload(client, tokens["access"], png()).json
    before = stored(settings)
    bad = upload(client, tokens["access"], b"not an image")
    assert bad.status == 400 and list(bad.json) == ["photo"]
    _, none = client.put("/api/me/photo/", headers=bearer(tokens["access"]), data={"other": "x"})
    assert none.status == 400 and list(none.json) == ["photo"]
    assert stored(settings) == before
    assert client.get("/api/me/", headers=bearer(tokens["access"]))[1].json == kept


def test_a_phone_photo_is_stored_small_with_a_square_thumbnail(client):
    _, tokens = account(client, "ana@example.com")
    buf = io.BytesIO()
    Image.effect_noise((3000, 2000), 30).convert("RGB").save(buf, "JPEG", quality=90)
    resp = upload(client, tokens["access"], buf.getvalue(), "phone.jpg", "image/jpeg")
    assert resp.status == 200, resp.text
    photo = client.get(resp.json["photo"])[1].content
    thumbnail = client.get(resp.json["photo_thumbnail"])[1].content
    with Image.open(io.BytesIO(photo)) as big, Image.open(io.BytesIO(thumbnail)) as small:
        assert big.format == "JPEG" and max(big.size) <= 1024 and big.size[0] > big.size[1]
        assert big.info.get("progressive") and small.size == (256, 256)
    assert len(photo) < len(buf.getvalue()) / 10


def delete(client, token: str, password: str | None = PASSWORD):
    # httpx's delete() takes no body: the general request does.
    body = {} if password is None else {"password": password}
    return client._sanic_endpoint_test(
        "request", uri="/api/me/", http_method="DELETE", headers=bearer(token), json=body
    )[1]


def test_deleting_needs_the_password_and_no_open_trip(client, sql):
    rider, tokens = account(client, "ana@example.com")
    wrong = delete(client, tokens["access"], "not the password")
    assert wrong.status == 403 and set(wrong.json) == {"detail"}
    missing = delete(client, tokens["access"], None)
    assert missing.status == 400 and list(missing.json) == ["password"]
    trip = sql.add_trip(rider["id"])
    busy = delete(client, tokens["access"])
    assert busy.status == 409 and set(busy.json) == {"detail"}
    assert client.get("/api/me/", headers=bearer(tokens["access"]))[1].status == 200
    sql.execute("UPDATE taxi_trip SET status = 'COMPLETED' WHERE id = %s", (trip.replace("-", ""),))
    assert delete(client, tokens["access"]).status == 204


def test_a_deleted_account_is_gone_and_its_trips_show_deleted(client, settings, sql):
    rider, tokens = account(client, "ana@example.com")
    driver, driver_tokens = account(client, "dan@example.com", "driver")
    photo = upload(client, tokens["access"], png()).json
    trip = sql.add_trip(rider["id"], driver["id"], status="COMPLETED")
    assert delete(client, tokens["access"]).status == 204
    # No log-in, no refresh, no access with the tokens already issued, and no photo left.
    _, login = client.post("/api/log_in/", json={"username": "ana@example.com", "password": PASSWORD})
    assert login.status == 401
    assert client.post("/api/token/refresh/", json={"refresh": tokens["refresh"]})[1].status == 401
    assert client.get("/api/me/", headers=bearer(tokens["access"]))[1].status == 401
    assert stored(settings) == set()
    assert client.get(photo["photo"])[1].status == 404
    # The driver's history keeps the trip, without the person.
    _, seen = client.get(f"/api/trip/{trip}/", headers=bearer(driver_tokens["access"]))
    assert seen.json["rider"] == {
        "id": None,
        "username": "deleted",
        "first_name": "",
        "last_name": "",
        "group": "rider",
        "photo": None,
        "photo_thumbnail": None,
    }
    assert seen.json["driver"]["id"] == driver["id"]
    row = sql.fetch("SELECT first_name, last_name, photo, photo_thumbnail FROM taxi_user WHERE id = %s", (rider["id"],))
    assert row == [("", "", None, None)]
    # The username is free again, whatever its case.
    again = sign_up(client, "ANA@example.com")
    assert again["id"] != rider["id"]


def test_deleting_closes_the_accounts_open_sockets(client, sql):
    live = Live(client)
    rider = live.account("ana@example.com")
    other = live.account("bob@example.com")

    async def scenario():
        async with (
            await connect(live.base, rider["access"]) as mine,
            await connect(live.base, other["access"]) as theirs,
        ):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{client.port}") as http:
                resp = await http.request(
                    "DELETE", "/api/me/", headers=bearer(rider["access"]), json={"password": PASSWORD}
                )
            assert resp.status_code == 204
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(mine.recv(), WAIT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
            await theirs.send('{"type": "echo.message", "data": 1}')
            assert await asyncio.wait_for(theirs.recv(), WAIT) == '{"type":"echo.message","data":1}'

    live.run(scenario())
