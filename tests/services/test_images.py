"""Photo processing: two sizes, the format family kept, the first frame of an animation, upright, no metadata."""

from __future__ import annotations

import io

import pytest
from PIL import ExifTags, Image

from taxi.errors import ValidationFailed
from taxi.services.images import LONG_SIDE, THUMBNAIL, clean_image

MAX_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 16_000_000


def encode(im: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def opened(body: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(body))
    im.load()
    return im


@pytest.mark.parametrize(
    "fmt,size,mode",
    [
        ("JPEG", (4000, 3000), "RGB"),
        ("JPEG", (1200, 5000), "L"),
        ("PNG", (2500, 1000), "RGBA"),
        ("PNG", (1500, 1500), "P"),
        ("WEBP", (2048, 1536), "RGB"),
        ("GIF", (1300, 900), "P"),
    ],
)
def test_a_large_photo_becomes_at_most_1024_on_its_long_side_and_a_square_thumbnail(fmt, size, mode):
    clean = clean_image(encode(Image.new(mode, size), fmt), MAX_BYTES, MAX_PIXELS)
    photo, thumbnail = opened(clean.photo), opened(clean.thumbnail)
    assert photo.format == thumbnail.format == fmt
    assert max(photo.size) <= LONG_SIDE and max(photo.size) >= LONG_SIDE * 3 // 4
    # The shape is kept (within the rounding of a reduced decode).
    assert abs(photo.size[0] / photo.size[1] - size[0] / size[1]) < 0.02
    assert thumbnail.size == (THUMBNAIL, THUMBNAIL)


def test_a_jpeg_is_progressive_and_a_small_photo_keeps_its_size():
    clean = clean_image(encode(Image.new("RGB", (640, 480)), "JPEG"), MAX_BYTES, MAX_PIXELS)
    photo = opened(clean.photo)
    assert photo.size == (640, 480) and photo.info.get("progressive")


def test_an_animation_is_stored_as_its_first_frame():
    frames = [Image.new("RGB", (300, 200), colour) for colour in ("red", "blue", "green")]
    body = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    clean = clean_image(body, MAX_BYTES, MAX_PIXELS)
    for stored in (clean.photo, clean.thumbnail):
        im = opened(stored)
        assert getattr(im, "n_frames", 1) == 1
        assert im.convert("RGB").getpixel((10, 10)) == (255, 0, 0)


def test_both_sizes_are_upright_and_carry_no_exif():
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored sideways: the viewer must turn it 90° clockwise
    exif[ExifTags.Base.Make] = "PhoneMaker"
    wide = Image.new("RGB", (3000, 2000), "white")
    clean = clean_image(encode(wide, "JPEG", exif=exif), MAX_BYTES, MAX_PIXELS)
    photo = opened(clean.photo)
    assert photo.size[0] < photo.size[1]  # turned: now tall
    for stored in (clean.photo, clean.thumbnail):
        assert not opened(stored).getexif() and b"PhoneMaker" not in stored


def test_a_photo_over_the_pixel_limit_is_refused_before_decoding():
    with pytest.raises(ValidationFailed) as refused:
        clean_image(encode(Image.new("L", (5000, 4000)), "PNG"), MAX_BYTES, MAX_PIXELS)
    assert list(refused.value.errors) == ["photo"]
