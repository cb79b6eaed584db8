"""Photos: decode an upload with Pillow, re-encode its pixels without metadata, keep it under a name we choose.

What is stored is never the uploaded file: a phone's photo carries EXIF (the GPS position where it was taken,
the device), XMP and comments, and anyone with the URL can fetch it. Only the pixels (turned upright as the EXIF
orientation says), transparency and the colour profile survive, in the same format family.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import secrets
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

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
PHOTO_NAME = re.compile(r"^[0-9a-f]{32}\.(jpg|png|webp|gif)$")
PHOTO_DIR = "photos"
# What a re-encoded image keeps of the decoder's info: how it looks, nothing about where or by whom it was taken.
_KEPT_INFO = ("transparency", "background", "icc_profile")
_INVALID = "Upload a valid image. The file you uploaded was either not an image or a corrupted image."


@dataclass(frozen=True)
class CleanImage:
    """An accepted photo: its extension and the re-encoded bytes to store."""

    extension: str
    body: bytes


def _reencode(source: Image.Image, fmt: str) -> bytes:
    """The first frame's pixels, upright, in ``fmt``, with no metadata but transparency and colour profile."""
    upright = ImageOps.exif_transpose(source)  # a new image, the orientation applied to its pixels
    upright.info = {key: source.info[key] for key in _KEPT_INFO if key in source.info}
    options: dict[str, object] = {}
    if icc := source.info.get("icc_profile"):
        options["icc_profile"] = icc
    if fmt == "JPEG":
        # The upload's own quantisation tables: about the same quality and size as what was sent.
        quantization = getattr(source, "quantization", None)
        if quantization:
            options.update(qtables=quantization, subsampling=JpegImagePlugin.get_sampling(source))
        else:
            options["quality"] = 90
    elif fmt == "WEBP":
        options["quality"] = 90
    out = io.BytesIO()
    upright.save(out, fmt, **options)  # one frame: save_all is not asked for
    return out.getvalue()


def clean_image(body: bytes, max_bytes: int, max_pixels: int) -> CleanImage:
    """Decode the whole image and re-encode it (blocking; run it in an executor); refuse anything but a sane photo."""
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
                im.load()  # a truncated or corrupt file fails here
                if fmt not in FORMATS:
                    raise ValidationFailed.field("photo", f"Unsupported image format: expected {ACCEPTED}.")
                return CleanImage(FORMATS[fmt][0], _reencode(im, fmt))
    except ValidationFailed:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValidationFailed.field("photo", _INVALID) from None
    except (OSError, SyntaxError, ValueError, EOFError, KeyError):
        raise ValidationFailed.field("photo", _INVALID) from None


def _write(root: Path, body: bytes, extension: str) -> str:
    folder = root / PHOTO_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{secrets.token_hex(16)}.{extension}"
    tmp = folder / f".{name}.part"
    tmp.write_bytes(body)
    os.replace(tmp, folder / name)
    return f"{PHOTO_DIR}/{name}"


def _read_regular(folder: Path, name: str) -> bytes | None:
    """The bytes of ``folder/name`` if it is a regular file there: never through a symbolic link, never a FIFO."""
    # O_NOFOLLOW refuses a link as the last component; O_NONBLOCK keeps a FIFO from blocking the open.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(folder / name, flags)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return handle.read()


class Media:
    """Stores checked photos under ``root`` and finds them again by name."""

    def __init__(self, root: Path, max_bytes: int, max_pixels: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels

    async def store_photo(self, body: bytes) -> str:
        """Check, clean and store an upload; return its media-relative name, e.g. ``photos/<hex>.png``."""
        loop = asyncio.get_running_loop()
        clean = await loop.run_in_executor(None, clean_image, body, self.max_bytes, self.max_pixels)
        return await loop.run_in_executor(None, _write, self.root, clean.body, clean.extension)

    async def discard(self, name: str) -> None:
        """Remove a stored photo (sign-up failed after the file was written)."""
        bare = name.removeprefix(f"{PHOTO_DIR}/")
        if PHOTO_NAME.match(bare):
            path = self.root / PHOTO_DIR / bare
            await asyncio.get_running_loop().run_in_executor(None, lambda: path.unlink(missing_ok=True))

    async def read_photo(self, name: str) -> tuple[bytes, str] | None:
        """A stored photo's bytes and content type; None for a name we could not have given out, or for anything in
        the photo folder that is not a regular file of its own (a symbolic link, a FIFO, a folder linked elsewhere)."""
        if not PHOTO_NAME.match(name):
            return None
        folder = self.root / PHOTO_DIR
        body = await asyncio.get_running_loop().run_in_executor(None, self._read, folder, name)
        return None if body is None else (body, CONTENT_TYPES[name.rsplit(".", 1)[1]])

    def _read(self, folder: Path, name: str) -> bytes | None:
        # The photo folder itself must be where the root says, not a link to somewhere else.
        if os.path.realpath(folder) != os.path.join(os.path.realpath(self.root), PHOTO_DIR):
            return None
        return _read_regular(folder, name)
