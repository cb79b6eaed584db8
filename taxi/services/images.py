"""Photo processing with Pillow (blocking: run it in an executor): decode an upload, refuse anything but a sane
image, and re-encode its pixels in two sizes without metadata.

What is stored is never the uploaded file: a phone's photo carries EXIF (the GPS position where it was taken,
the device), XMP and comments, and anyone with the URL can fetch it. Only the pixels (turned upright as the EXIF
orientation says), transparency and the colour profile survive, in the same format family: a photo at most
``LONG_SIDE`` pixels on its long side, and a ``THUMBNAIL`` square cut from its centre.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from taxi.errors import ValidationFailed

# Pillow format -> (extension, content type). Nothing else is accepted.
FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("jpg", "image/jpeg"),
    "PNG": ("png", "image/png"),
    "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", "image/gif"),
}
ACCEPTED = "JPEG, PNG, WebP or GIF"
CONTENT_TYPES = {ext: ctype for ext, ctype in FORMATS.values()}
LONG_SIDE = 1024  # what a phone shows full screen
THUMBNAIL = 256  # a trip card's avatar, square, at 3x density for a 48-85 point circle
DRAFT_LONG_SIDE = LONG_SIDE * 3 // 4  # a JPEG decoded at reduced scale keeps at least this long side
JPEG_QUALITY = 85
WEBP_QUALITY = 85
# What a re-encoded image keeps of the decoder's info: how it looks, nothing about where or by whom it was taken.
_KEPT_INFO = ("transparency", "background", "icc_profile")
INVALID_IMAGE = "Upload a valid image. The file you uploaded was either not an image or a corrupted image."


@dataclass(frozen=True)
class CleanImage:
    """An accepted photo: its extension, and the re-encoded photo and thumbnail to store."""

    extension: str
    photo: bytes
    thumbnail: bytes

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.extension]


def _reduced_decode(im: Image.Image) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when that still leaves at least ``DRAFT_LONG_SIDE`` pixels on
    the long side (and ``THUMBNAIL`` on the short one). A 12 Mpx photo (4000 x 3000) then decodes as 1000 x 750,
    a sixteenth of the pixels, and needs no resampling at all: the long side is a little under ``LONG_SIDE``
    rather than resampled down to it from 2000."""
    if im.format != "JPEG":
        return
    width, height = im.size
    scale = max(DRAFT_LONG_SIDE / max(width, height), THUMBNAIL / min(width, height))
    if scale < 1:
        im.draft(im.mode, (math.ceil(width * scale), math.ceil(height * scale)))


def _scalable(im: Image.Image) -> Image.Image:
    """A mode that resizes smoothly: palette and two-level images are resampled as RGB(A), not nearest-neighbour."""
    if im.mode in ("P", "1", "LA", "PA") or (im.mode == "L" and "transparency" in im.info):
        return im.convert("RGBA" if im.has_transparency_data else "RGB")
    if im.mode.startswith("I") or im.mode == "F":  # 16-bit grey: resampled and stored as 8-bit grey
        return im.convert("I").point(lambda value: value / 257).convert("L")
    return im


def _encode(im: Image.Image, fmt: str, icc: bytes | None) -> bytes:
    options: dict[str, object] = {}
    if icc:
        options["icc_profile"] = icc
    if fmt == "JPEG":
        options.update(quality=JPEG_QUALITY, progressive=True)
        if im.mode not in ("RGB", "L", "CMYK"):
            im = im.convert("RGB")
    elif fmt == "WEBP":
        options["quality"] = WEBP_QUALITY
    out = io.BytesIO()
    im.save(out, fmt, **options)  # one frame: save_all is not asked for
    return out.getvalue()


def _sizes(source: Image.Image, fmt: str) -> tuple[bytes, bytes]:
    """The first frame's pixels, upright, as the photo (long side at most ``LONG_SIDE``) and the thumbnail."""
    icc = source.info.get("icc_profile")
    kept: dict[str | tuple[int, int], Any] = {key: source.info[key] for key in _KEPT_INFO if key in source.info}
    # The orientation applied to the pixels (no copy when there is none to apply); then no metadata but ``kept``.
    ImageOps.exif_transpose(source, in_place=True)
    source.info = kept
    upright = source
    if max(upright.size) > LONG_SIDE:
        upright = _scalable(upright)
        upright.thumbnail((LONG_SIDE, LONG_SIDE), Image.Resampling.LANCZOS, reducing_gap=2.0)
    square = ImageOps.fit(_scalable(upright), (THUMBNAIL, THUMBNAIL), Image.Resampling.LANCZOS)
    return _encode(upright, fmt, icc), _encode(square, fmt, icc)


def clean_image(body: bytes, max_bytes: int, max_pixels: int) -> CleanImage:
    """Decode the image and re-encode it in both sizes (blocking; run it in an executor); refuse anything but a
    sane photo with a 400 on ``photo``."""
    if not body:
        raise ValidationFailed.field("photo", "The submitted file is empty.")
    if len(body) > max_bytes:
        raise ValidationFailed.field("photo", f"Ensure the file is at most {max_bytes // (1024 * 1024)} MB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(body), formats=list(FORMATS)) as im:
                fmt = im.format or ""
                width, height = im.size
                # Refuse by header before decoding a single pixel: a small file can claim gigapixels.
                if width * height > max_pixels:
                    raise ValidationFailed.field(
                        "photo", f"Image is too large: {width}x{height} pixels, at most {max_pixels} allowed."
                    )
                if fmt not in FORMATS:
                    raise ValidationFailed.field("photo", f"Unsupported image format: expected {ACCEPTED}.")
                _reduced_decode(im)
                im.load()  # a truncated or corrupt file fails here
                photo, thumbnail = _sizes(im, fmt)
                return CleanImage(FORMATS[fmt][0], photo, thumbnail)
    except ValidationFailed:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValidationFailed.field("photo", INVALID_IMAGE) from None
    except (OSError, SyntaxError, ValueError, EOFError, KeyError):
        raise ValidationFailed.field("photo", INVALID_IMAGE) from None
