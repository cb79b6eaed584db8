"""Photo uploads are decoded before they are stored; only names the server gave out are served."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import zlib

import pytest
from PIL import Image
from sanic_testing.reusable import ReusableClient

from taxi.app import create_app
from taxiload.harness import free_port
from tests.conftest import make_settings
from tests.support import PASSWORD, png


def sign_up_with(client, photo: tuple[str, bytes, str], username: str = "p@example.com"):
    return client.post(
        "/api/sign_up/",
        data={"username": username, "password1": PASSWORD, "password2": PASSWORD, "group": "rider"},
        files={"photo": photo},
    )[1]


def stored_files(settings) -> list:
    folder = settings.media_root / "photos"
    return list(folder.iterdir()) if folder.exists() else []


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = zlib.compress(b"\x00" * (width // 8 + 1) * 16)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
        + chunk(b"IDAT", raw)
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "fmt,ext,ctype", [("JPEG", "jpg", "image/jpeg"), ("WEBP", "webp", "image/webp"), ("GIF", "gif", "image/gif")]
)
def test_each_accepted_format_is_stored_and_served_with_its_type(client, fmt, ext, ctype):
    body = png(40, 30, fmt)
    resp = sign_up_with(client, ("any-name.bin", body, "application/octet-stream"))
    assert resp.status == 201, resp.text
    assert resp.json["photo"].endswith(f".{ext}")
    _, got = client.get(resp.json["photo"])
    assert got.status == 200 and got.headers["content-type"] == ctype and got.content == body
    assert got.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "name,body",
    [
        ("photo.png", b"this is not an image at all"),
        ("photo.png", png()[:200]),  # truncated
        ("photo.png", b""),
        ("bomb.png", png_bomb(20000, 20000)),  # 400 megapixels claimed by a few hundred bytes
        ("../../etc/passwd.png", b"GIF89a not really"),
    ],
)
def test_bad_uploads_are_400_on_photo_and_nothing_is_written(client, settings, sql, name, body):
    resp = sign_up_with(client, (name, body, "image/png"))
    assert resp.status == 400, resp.text
    assert list(resp.json) == ["photo"]
    assert stored_files(settings) == []
    assert sql.fetch("SELECT COUNT(*) FROM taxi_user")[0][0] == 0


def test_unsupported_image_format_is_refused(client, settings):
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, "BMP")
    resp = sign_up_with(client, ("photo.bmp", buf.getvalue(), "image/bmp"))
    assert resp.status == 400 and list(resp.json) == ["photo"]
    assert stored_files(settings) == []


def test_photo_over_5_mb_is_refused_and_a_body_over_the_limit_is_413(client, settings):
    big = png() + b"\x00" * (5 * 1024 * 1024)
    resp = sign_up_with(client, ("photo.png", big, "image/png"))
    assert resp.status == 400 and list(resp.json) == ["photo"]

    # Sanic answers 413 from the Content-Length alone and closes; httpx would fail writing the rest,
    # so speak HTTP on a plain connection (inside the test server's loop, which only runs while awaited).
    async def oversized() -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
        writer.write(
            b"POST /api/sign_up/ HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: %d\r\n\r\n" % (7 * 1024 * 1024) + b"--b\r\n" + b"\x00" * 65536
        )
        reply = await asyncio.wait_for(reader.read(65536), 10)
        writer.close()
        return reply.decode()

    reply = client._run(oversized())
    status_line, _, rest = reply.partition("\r\n")
    assert status_line.split()[1] == "413"
    assert json.loads(rest.split("\r\n\r\n", 1)[1]) == {
        "detail": f"Request body is too large: at most {settings.max_request_bytes} bytes are accepted."
    }
    assert stored_files(settings) == []


def test_taken_username_leaves_no_orphan_photo(client, settings):
    assert sign_up_with(client, ("a.png", png(), "image/png"), "same@example.com").status == 201
    resp = sign_up_with(client, ("b.png", png(), "image/png"), "same@example.com")
    assert resp.status == 400 and list(resp.json) == ["username"]
    assert len(stored_files(settings)) == 1


@pytest.mark.parametrize(
    "path",
    [
        "/media/photos/nothere.png",
        "/media/photos/" + "a" * 32 + ".png",
        "/media/photos/..%2f..%2fsetup.cfg",
        "/media/photos/%2e%2e/%2e%2e/taxi.sqlite3",
        "/media/../setup.cfg",
        "/media/",
        "/media/other/file.png",
    ],
)
def test_nothing_else_under_media_is_served(client, settings, path):
    (settings.media_root / "photos").mkdir(parents=True, exist_ok=True)
    (settings.media_root / "secret.txt").write_text("do not serve")
    _, resp = client.get(path)
    assert resp.status == 404, path
    assert set(resp.json) == {"detail"}


def test_a_photo_that_cannot_be_written_is_our_error_not_a_database_outage(database_url, tmp_path, sql):
    # A file where the media folder should be: writing the photo fails with an OSError. That is a server fault
    # (500, logged with its traceback), not "the database is away, retry" (503), and no account is created.
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    app = create_app(make_settings(database_url, tmp_path, media_root=blocker / "media"), name="taxi_media_fault")
    with ReusableClient(app, port=free_port()) as client:
        resp = sign_up_with(client, ("me.png", png(), "image/png"))
    assert resp.status == 500 and resp.json == {"detail": "Internal server error."}
    assert "retry-after" not in resp.headers
    assert sql.fetch("SELECT COUNT(*) FROM taxi_user")[0][0] == 0
