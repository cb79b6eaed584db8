"""Photos in an S3-compatible store, against a real one (SeaweedFS, started here on free ports and removed after):
served from the bucket by a short-lived presigned redirect or a public URL, shared by every server, and a store that
is away costs photo uploads only (503 with Retry-After), leaving nothing half-written behind."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiobotocore.session import get_session
from PIL import Image
from sanic_testing.reusable import ReusableClient

from taxi import db as dbm
from taxi.app import create_app, photo_store
from taxi.config import DatabaseURL, Settings
from taxi.domain import utcnow
from taxi.queries import media as pending
from taxi.services.media import Media
from taxiload.harness import REPO, ServerProcess, free_port
from taxiload.seaweed import ACCESS_KEY, SECRET_KEY, PrivateSeaweed
from tests.conftest import make_settings
from tests.servers import server_env
from tests.support import PASSWORD, SyncDB, bearer, log_in, png, sign_up


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateSeaweed]:
    with PrivateSeaweed(tmp_path_factory.mktemp("seaweed"), bucket=f"photos-{secrets.token_hex(3)}") as seaweed:
        yield seaweed


def s3_settings(url: DatabaseURL, tmp_path: Path, store: PrivateSeaweed, **overrides: object) -> Settings:
    return make_settings(
        url,
        tmp_path,
        media_storage="s3",
        s3_endpoint=store.url,
        s3_bucket=store.bucket,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        **overrides,
    )


@pytest.fixture
def s3_client(database_url, tmp_path, store) -> Iterator[ReusableClient]:
    SyncDB(database_url).reset()
    app = create_app(s3_settings(database_url, tmp_path, store), name=f"taxi_{secrets.token_hex(4)}")
    with ReusableClient(app, port=free_port()) as client:
        yield client


def objects(store: PrivateSeaweed) -> set[str]:
    """Every key in the bucket, read with a client of our own."""

    async def listing() -> set[str]:
        async with get_session().create_client(
            "s3",
            endpoint_url=store.url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        ) as s3:
            found = await s3.list_objects_v2(Bucket=store.bucket)
            return {item["Key"] for item in found.get("Contents", [])}

    return asyncio.run(listing())


def sign_up_with_photo(client, username: str, body: bytes | None = None):
    form = {"username": username, "password1": PASSWORD, "password2": PASSWORD, "group": "rider"}
    return client.post("/api/sign_up/", data=form, files={"photo": ("me.png", body or png(300, 200), "image/png")})[1]


def fetched(url: str) -> bytes:
    response = httpx.get(url, timeout=10)
    assert response.status_code == 200, (url, response.status_code, response.text[:200])
    return response.content


def referenced(user: dict) -> set[str]:
    return {user["photo"].split("/media/", 1)[1], user["photo_thumbnail"].split("/media/", 1)[1]}


def test_a_photo_is_stored_in_the_bucket_and_served_by_a_presigned_redirect(s3_client, store):
    resp = sign_up_with_photo(s3_client, "ana@example.com")
    assert resp.status == 201, resp.text
    user = resp.json
    assert user["photo"].startswith("/media/photos/")
    assert referenced(user) <= objects(store)
    _, redirect = s3_client.get(user["photo"], follow_redirects=False)
    assert redirect.status == 302
    location = redirect.headers["location"]
    assert location.startswith(f"{store.url}/{store.bucket}/photos/") and "X-Amz-Signature=" in location
    assert "X-Amz-Expires=300" in location and redirect.headers["cache-control"] == "private, max-age=150"
    with Image.open(io.BytesIO(fetched(location))) as image:
        assert image.size == (300, 200) and image.format == "PNG"
    assert s3_client.get("/media/photos/" + "a" * 32 + ".png", follow_redirects=False)[1].status in (302, 404)
    assert s3_client.get("/media/photos/../../etc/passwd", follow_redirects=False)[1].status == 404


def test_a_public_media_url_is_used_as_it_is(database_url, tmp_path, store):
    SyncDB(database_url).reset()
    cdn = "https://cdn.example.com/taxi"
    app = create_app(s3_settings(database_url, tmp_path, store, media_public_url=cdn), name="taxi_cdn")
    with ReusableClient(app, port=free_port()) as client:
        user = sign_up_with_photo(client, "ana@example.com").json
    assert user["photo"].startswith(f"{cdn}/photos/") and user["photo_thumbnail"].startswith(f"{cdn}/photos/")
    assert {f"photos/{url.rsplit('/', 1)[1]}" for url in (user["photo"], user["photo_thumbnail"])} <= objects(store)


def test_replacing_and_deleting_remove_the_objects(s3_client, store):
    sign_up(s3_client, "ana@example.com")
    tokens = log_in(s3_client, "ana@example.com")
    headers = bearer(tokens["access"])
    first = s3_client.put("/api/me/photo/", headers=headers, files={"photo": ("a.png", png(), "image/png")})[1].json
    second = s3_client.put("/api/me/photo/", headers=headers, files={"photo": ("b.png", png(), "image/png")})[1].json
    keys = objects(store)
    assert referenced(second) <= keys and not referenced(first) & keys
    gone = s3_client._sanic_endpoint_test(
        "request", uri="/api/me/", http_method="DELETE", headers=headers, json={"password": PASSWORD}
    )[1]
    assert gone.status == 204
    assert not referenced(second) & objects(store)


def test_a_store_that_is_away_costs_photo_uploads_only(pg_database_url, tmp_path):
    # A store of its own: stopping and restarting it must not disturb the other tests' store.
    with (
        PrivateSeaweed(tmp_path / "seaweed") as store,
        ReusableClient(
            create_app(s3_settings(pg_database_url, tmp_path, store), name="taxi_away"), port=free_port()
        ) as client,
    ):
        outage(client, store, SyncDB(pg_database_url))


def outage(s3_client: ReusableClient, store: PrivateSeaweed, sql: SyncDB) -> None:
    kept = sign_up_with_photo(s3_client, "ana@example.com").json
    token = log_in(s3_client, "ana@example.com")["access"]
    before = objects(store)
    store.stop()
    try:
        refused = sign_up_with_photo(s3_client, "bob@example.com")
        assert refused.status == 503 and set(refused.json) == {"detail"} and int(refused.headers["retry-after"]) > 0
        assert sql.fetch("SELECT COUNT(*) FROM taxi_user WHERE username = %s", ("bob@example.com",))[0][0] == 0
        change = s3_client.put("/api/me/photo/", headers=bearer(token), files={"photo": ("n.png", png(), "image/png")})
        assert change[1].status == 503 and "retry-after" in change[1].headers
        # Everything else works: the old photo is still the user's, sign-up without a photo, log-in, the trips.
        assert s3_client.get("/api/me/", headers=bearer(token))[1].json == kept
        assert sign_up(s3_client, "carla@example.com")["photo"] is None
        assert (
            s3_client.get("/api/trip/", headers=bearer(log_in(s3_client, "carla@example.com")["access"]))[1].status
            == 200
        )
        assert s3_client.get(kept["photo"], follow_redirects=False)[1].status == 302  # signed here, no request
    finally:
        store.start()
    # The failed uploads left notes of the objects they meant to write (4: two uploads, two sizes); a sweep once the
    # store is back clears them, and the bucket holds what it held before.
    assert sql.fetch("SELECT COUNT(*) FROM taxi_media_pending")[0][0] == 4
    asyncio.run(sweep(sql.url, dt.timedelta(0), s3_client.app))
    assert sql.fetch("SELECT COUNT(*) FROM taxi_media_pending")[0][0] == 0
    assert objects(store) == before


def own_media(settings: Settings) -> Media:
    """Media as the app builds it, with a store client of its own (the server's belongs to the server's loop)."""
    return Media(photo_store(settings), settings.max_photo_bytes, settings.max_photo_pixels)


async def sweep(url: DatabaseURL, grace: dt.timedelta, app) -> int:
    """Run one sweep of the app's store against the test database, on a loop of our own."""
    database = await dbm.connect(url, 1)
    media = own_media(app.ctx.settings)
    await media.start(sweep_every=None)
    try:
        return await media.sweep(grace)
    finally:
        await media.stop()
        await database.aio_close()


def test_a_sweep_removes_objects_no_user_names_and_keeps_the_rest(s3_client, store, sql):
    user = sign_up_with_photo(s3_client, "ana@example.com").json
    before = objects(store)  # the bucket serves the whole module
    media = own_media(s3_client.app.ctx.settings)

    async def leftovers() -> None:
        database = await dbm.connect(sql.url, 1)
        await media.start(sweep_every=None)
        try:
            # As a crash between the store and the database would leave them: objects noted, named by no user.
            await pending.add_pending(["photos/" + "b" * 32 + ".png"], utcnow() - dt.timedelta(hours=1))
            await media.store.put("b" * 32 + ".png", png(), "image/png")
            await pending.add_pending(["photos/" + "c" * 32 + ".png"], utcnow())  # too recent: maybe in flight
            await media.store.put("c" * 32 + ".png", png(), "image/png")
            await pending.add_pending(list(referenced(user)), utcnow() - dt.timedelta(hours=1))  # a user's
            assert await media.sweep() == 1
        finally:
            await media.stop()
            await database.aio_close()

    asyncio.run(leftovers())
    assert referenced(user) <= before
    assert objects(store) == before | {"photos/" + "c" * 32 + ".png"}
    assert [row[0] for row in sql.fetch("SELECT name FROM taxi_media_pending")] == ["photos/" + "c" * 32 + ".png"]


def test_two_servers_with_their_own_folders_serve_each_others_photos(pg_database_url, tmp_path, store):
    common = store.env()
    a_env = {**server_env(pg_database_url, tmp_path / "a"), **common}
    b_env = {**server_env(pg_database_url, tmp_path / "b"), **common}
    assert a_env["TAXI_MEDIA_ROOT"] != b_env["TAXI_MEDIA_ROOT"]
    with ServerProcess(a_env) as a, ServerProcess(b_env, workers=2) as b:
        form = {"username": "ana@example.com", "password1": PASSWORD, "password2": PASSWORD, "group": "rider"}
        created = httpx.post(f"{a.url}/api/sign_up/", data=form, files={"photo": ("me.png", png(64, 48), "image/png")})
        assert created.status_code == 201, created.text
        photo = created.json()["photo"]
        for server in (a, b):
            served = httpx.get(f"{server.url}{photo}", follow_redirects=True, timeout=10)
            assert served.status_code == 200 and served.headers["content-type"] == "image/png"
            with Image.open(io.BytesIO(served.content)) as image:
                assert image.size == (64, 48)
        assert not any((tmp_path / side / "media").exists() for side in ("a", "b"))  # nothing on either disk


def media_command(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m taxi media ...`` as an operator runs it, with only ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "taxi", "media", *args],
        cwd=REPO,
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def old_photo(folder: Path) -> str:
    """A photo as the server stored it before sizes: the upload itself, 2000 px wide, with its EXIF."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    name = f"{secrets.token_hex(16)}.jpg"
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2000, 1500), "teal").save(folder / name, "JPEG", exif=exif)
    return f"photos/{name}"


def test_local_photos_are_migrated_to_the_bucket_and_old_ones_reprocessed(pg_database_url, tmp_path, store):
    sql = SyncDB(pg_database_url)
    local = make_settings(pg_database_url, tmp_path)
    with ReusableClient(create_app(local, name="taxi_local"), port=free_port()) as client:
        new = sign_up_with_photo(client, "new@example.com").json
        sign_up(client, "old@example.com")
    legacy = old_photo(local.media_root / "photos")
    sql.execute("UPDATE taxi_user SET photo = %s WHERE username = %s", (legacy, "old@example.com"))
    env = {**server_env(pg_database_url, tmp_path), **store.env(), "TAXI_MEDIA_STORAGE": "local"}
    env["TAXI_MEDIA_ROOT"] = str(local.media_root)

    first = media_command(env, "migrate", "--to", "s3")
    assert first.returncode == 0, first.stderr
    assert "3 copied" in first.stdout, first.stdout
    assert referenced(new) | {legacy} <= objects(store)
    again = media_command(env, "migrate", "--to", "s3")  # resumable: what is there is skipped
    assert again.returncode == 0 and "3 already there" in again.stdout and "copied" not in again.stdout, again.stdout

    env["TAXI_MEDIA_STORAGE"] = "s3"
    rewritten = media_command(env, "reprocess")
    assert rewritten.returncode == 0, rewritten.stderr
    assert "1 rewritten" in rewritten.stdout, rewritten.stdout
    photo, thumbnail = sql.fetch(
        "SELECT photo, photo_thumbnail FROM taxi_user WHERE username = %s", ("old@example.com",)
    )[0]
    assert photo != legacy and thumbnail is not None
    keys = objects(store)
    assert legacy not in keys and {photo, thumbnail} <= keys
    media = own_media(s3_settings(pg_database_url, tmp_path, store))

    async def read(name: str) -> bytes | None:
        await media.store.start()
        try:
            return await media.store.get(name.removeprefix("photos/"))
        finally:
            await media.store.stop()

    body = asyncio.run(read(photo))
    assert body is not None and b"PhoneMaker" not in body
    with Image.open(io.BytesIO(body)) as image:
        assert max(image.size) <= 1024 and image.size[0] > image.size[1] and not image.getexif()
    assert "nothing to do" in media_command(env, "reprocess").stdout
