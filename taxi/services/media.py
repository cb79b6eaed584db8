"""Photos: decode an upload with Pillow before anything is stored, then keep it under a name we choose."""

from __future__ import annotations

import asyncio
import io
import os
import re
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

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


@dataclass(frozen=True)
class CheckedImage:
    extension: str
    width: int
    height: int


def check_image(body: bytes, max_bytes: int, max_pixels: int) -> CheckedImage:
    """Decode the whole image (blocking; run it in an executor) and refuse anything but a sane photo."""
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
    except ValidationFailed:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValidationFailed.field(
            "photo", "Upload a valid image. The file you uploaded was either not an image or a corrupted image."
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise ValidationFailed.field(
            "photo", "Upload a valid image. The file you uploaded was either not an image or a corrupted image."
        ) from None
    if fmt not in FORMATS:
        raise ValidationFailed.field("photo", f"Unsupported image format: expected {ACCEPTED}.")
    return CheckedImage(FORMATS[fmt][0], width, height)


def _write(root: Path, body: bytes, extension: str) -> str:
    folder = root / PHOTO_DIR
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{secrets.token_hex(16)}.{extension}"
    tmp = folder / f".{name}.part"
    tmp.write_bytes(body)
    os.replace(tmp, folder / name)
    return f"{PHOTO_DIR}/{name}"


class Media:
    """Stores checked photos under ``root`` and finds them again by name."""

    def __init__(self, root: Path, max_bytes: int, max_pixels: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels

    async def store_photo(self, body: bytes) -> str:
        """Check and store an upload; return its media-relative name, e.g. ``photos/<hex>.png``."""
        loop = asyncio.get_running_loop()
        checked = await loop.run_in_executor(None, check_image, body, self.max_bytes, self.max_pixels)
        return await loop.run_in_executor(None, _write, self.root, body, checked.extension)

    async def discard(self, name: str) -> None:
        """Remove a stored photo (sign-up failed after the file was written)."""
        path = self.photo_path(name.removeprefix(f"{PHOTO_DIR}/"))
        if path is not None:
            await asyncio.get_running_loop().run_in_executor(None, lambda: path.unlink(missing_ok=True))

    def photo_path(self, name: str) -> Path | None:
        """The file of a stored photo, or None for any name we could not have given out."""
        if not PHOTO_NAME.match(name):
            return None
        path = self.root / PHOTO_DIR / name
        return path if path.is_file() else None
