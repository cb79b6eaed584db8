"""Photo uploads are decoded before they are stored; only names the server gave out are served."""

from __future__ import annotations

import asyncio
import io
import json
import os
import struct
import zlib

import pytest
from PIL import ExifTags, Image, ImageCms, PngImagePlugin
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
    assert got.status == 200 and got.headers["content-type"] == ctype
    with Image.open(io.BytesIO(got.content)) as stored:
        assert stored.format == fmt and stored.size == (40, 30)
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
    assert len(stored_files(settings)) == 2  # the photo and its thumbnail, of the first sign-up only


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


# --- what a stored photo keeps: pixels, not the metadata of the phone that took it ---------------------

SECRETS = (b"SentinelPhone", b"SentinelComment", b"SentinelXMP", b"SentinelText")
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description>SentinelXMP 51.5007 -0.1246</rdf:Description></x:xmpmeta>'


def phone_exif() -> Image.Exif:
    """EXIF as a phone writes it: maker, GPS position of the shot, and "rotate 90 degrees clockwise to view"."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SentinelPhone"
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.IFD.GPSInfo] = {
        ExifTags.GPS.GPSLatitudeRef: "N",
        ExifTags.GPS.GPSLatitude: (51.0, 30.0, 2.5),
        ExifTags.GPS.GPSLongitudeRef: "W",
        ExifTags.GPS.GPSLongitude: (0.0, 7.0, 28.6),
    }
    return exif


def two_halves(mode: str = "RGB") -> Image.Image:
    """40 wide, 20 high: red on the left, blue on the right (stored sideways, as a phone held upright does)."""
    im = Image.new("RGB", (40, 20), (230, 20, 20))
    im.paste((20, 20, 230), (20, 0, 40, 20))
    return im.convert(mode) if mode != "RGB" else im


def phone_photo(fmt: str) -> bytes:
    buf = io.BytesIO()
    exif = phone_exif()
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    if fmt == "JPEG":
        two_halves().save(buf, "JPEG", exif=exif, xmp=XMP, comment=b"SentinelComment", icc_profile=icc, quality=95)
    elif fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", "SentinelComment")
        info.add_text("Description", "SentinelText", zip=True)
        info.add_itxt("XML:com.adobe.xmp", XMP.decode())
        two_halves().save(buf, "PNG", exif=exif, pnginfo=info, icc_profile=icc)
    elif fmt == "WEBP":
        two_halves().save(buf, "WEBP", exif=exif, xmp=XMP, icc_profile=icc, lossless=True)
    else:  # GIF: a comment and an EXIF-free orientation-free palette image, animated
        second = Image.new("RGB", (40, 20), (20, 230, 20))
        two_halves().save(buf, "GIF", save_all=True, append_images=[second], comment=b"SentinelComment", loop=0)
    body = buf.getvalue()
    assert any(secret in body for secret in SECRETS)  # the test image does carry what must go
    return body


def fetch_stored(client, photo: tuple[str, bytes, str], username: str = "p@example.com"):
    resp = sign_up_with(client, photo, username)
    assert resp.status == 201, resp.text
    _, got = client.get(resp.json["photo"])
    assert got.status == 200
    return resp.json["photo"], got


def colour_at(im: Image.Image, xy: tuple[int, int]) -> str:
    r, g, b = im.convert("RGB").getpixel(xy)[:3]
    return max((r, "red"), (g, "green"), (b, "blue"))[1]


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp")])
def test_a_stored_photo_has_no_metadata_and_is_turned_upright(client, fmt, ext):
    url, got = fetch_stored(client, ("IMG_0001.bin", phone_photo(fmt), "image/jpeg"))
    assert url.endswith(f".{ext}")
    for secret in SECRETS:
        assert secret not in got.content, secret
    with Image.open(io.BytesIO(got.content)) as stored:
        assert stored.format == fmt
        exif = stored.getexif()
        assert dict(exif) == {} and exif.get_ifd(ExifTags.IFD.GPSInfo) == {}
        assert not {"exif", "xmp", "comment", "XML:com.adobe.xmp", "Comment", "Description"} & set(stored.info)
        # The pixels were turned as the orientation tag said: 20 wide, 40 high, red on top, blue below.
        assert stored.size == (20, 40)
        assert colour_at(stored, (10, 5)) == "red" and colour_at(stored, (10, 35)) == "blue"
        # The colour profile is not personal and changes how the pixels look: it stays. (Bytes 24-35 of an ICC
        # header are its creation time: the test's own sRGB profile may be made in another second.)
        expected = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        kept = stored.info.get("icc_profile") or b""
        assert (kept[:24], kept[36:]) == (expected[:24], expected[36:])


def test_an_animated_gif_is_stored_as_its_first_frame_without_its_comment(client):
    url, got = fetch_stored(client, ("anim.gif", phone_photo("GIF"), "image/gif"))
    assert url.endswith(".gif") and got.headers["content-type"] == "image/gif"
    assert b"SentinelComment" not in got.content
    with Image.open(io.BytesIO(got.content)) as stored:
        assert stored.format == "GIF" and getattr(stored, "n_frames", 1) == 1
        assert "comment" not in stored.info
        assert stored.size == (40, 20)
        assert colour_at(stored, (5, 10)) == "red" and colour_at(stored, (35, 10)) == "blue"


def test_transparency_survives_the_re_encoding(client):
    buf = io.BytesIO()
    im = Image.new("RGBA", (10, 10), (255, 0, 0, 255))
    im.paste((0, 0, 0, 0), (0, 0, 5, 10))
    im.save(buf, "PNG")
    _, got = fetch_stored(client, ("t.png", buf.getvalue(), "image/png"))
    with Image.open(io.BytesIO(got.content)) as stored:
        rgba = stored.convert("RGBA")
        assert rgba.getpixel((1, 1))[3] == 0 and rgba.getpixel((8, 8)) == (255, 0, 0, 255)


# --- how photos are served ----------------------------------------------------------------------------


def test_a_photo_is_served_with_one_long_lived_cache_header(client):
    _, got = fetch_stored(client, ("a.png", png(), "image/png"))
    assert got.headers.get_list("cache-control") == ["public, max-age=31536000, immutable"]
    assert got.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("target", ["outside", "inside"])
def test_a_symlink_with_a_valid_name_is_not_followed(client, settings, tmp_path, target):
    folder = settings.media_root / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:secret\n")
    if target == "inside":  # even a link to a real photo in the folder: only regular files are served
        real = folder / ("b" * 32 + ".png")
        real.write_bytes(png())
        secret = real
    link = folder / ("a" * 32 + ".png")
    link.symlink_to(secret)
    _, resp = client.get(f"/media/photos/{link.name}")
    assert resp.status == 404 and set(resp.json) == {"detail"}
    assert b"secret" not in resp.content


def test_a_photo_folder_that_points_elsewhere_is_not_followed(client, settings, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ("c" * 32 + ".png")).write_bytes(png())
    settings.media_root.mkdir(parents=True, exist_ok=True)
    (settings.media_root / "photos").symlink_to(elsewhere, target_is_directory=True)
    _, resp = client.get("/media/photos/" + "c" * 32 + ".png")
    assert resp.status == 404


def test_a_fifo_with_a_valid_name_is_not_served_and_does_not_hang(client, settings):
    folder = settings.media_root / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    os.mkfifo(folder / ("d" * 32 + ".png"))
    _, resp = client.get("/media/photos/" + "d" * 32 + ".png")
    assert resp.status == 404
