"""Photos: an upload checked and re-encoded in two sizes (``taxi.services.images``), kept in a photo store under
names we choose, found again by name, and removed when replaced.

The store is a folder here (``LocalStore``); names are random and never reused, so a stored photo never changes.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Protocol

from taxi.queries.users import Photos
from taxi.services.images import ACCEPTED, CONTENT_TYPES, FORMATS, clean_image

__all__ = ["ACCEPTED", "CONTENT_TYPES", "FORMATS", "LocalStore", "Media", "PhotoStore", "Photos"]

PHOTO_NAME = re.compile(r"^[0-9a-f]{32}\.(jpg|png|webp|gif)$")
PHOTO_DIR = "photos"


class PhotoStore(Protocol):
    """Where photo files live, by bare name (``<hex>.<ext>``)."""

    async def put(self, name: str, body: bytes, content_type: str) -> None:
        """Store ``body`` under ``name``; it is readable by that name once this returns."""

    async def delete(self, name: str) -> None:
        """Remove ``name``; nothing happens if it is not there."""

    async def get(self, name: str) -> bytes | None:
        """The bytes stored under ``name``, or None."""


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


class LocalStore:
    """Photos as files in ``<root>/photos/``, written whole (a temporary file renamed into place)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = root / PHOTO_DIR

    def _write(self, name: str, body: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{name}.part"
        tmp.write_bytes(body)
        os.replace(tmp, self.folder / name)

    def _read(self, name: str) -> bytes | None:
        # The photo folder itself must be where the root says, not a link to somewhere else.
        if os.path.realpath(self.folder) != os.path.join(os.path.realpath(self.root), PHOTO_DIR):
            return None
        return _read_regular(self.folder, name)

    async def put(self, name: str, body: bytes, content_type: str) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._write, name, body)

    async def delete(self, name: str) -> None:
        path = self.folder / name
        await asyncio.get_running_loop().run_in_executor(None, lambda: path.unlink(missing_ok=True))

    async def get(self, name: str) -> bytes | None:
        return await asyncio.get_running_loop().run_in_executor(None, self._read, name)


def bare_name(stored: str) -> str | None:
    """The store's name for a stored value (``photos/<hex>.<ext>``), or None if it is not one we gave out."""
    bare = stored.removeprefix(f"{PHOTO_DIR}/")
    return bare if PHOTO_NAME.match(bare) else None


class Media:
    """Checks, re-encodes and stores photos in ``store``; limits come from the settings."""

    def __init__(self, store: PhotoStore, max_bytes: int, max_pixels: int) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels

    async def store_photo(self, body: bytes) -> Photos:
        """Check, re-encode and store an upload in both sizes; return their media-relative names
        (``photos/<hex>.<ext>``). Either both are stored or, on failure, neither is left behind."""
        loop = asyncio.get_running_loop()
        clean = await loop.run_in_executor(None, clean_image, body, self.max_bytes, self.max_pixels)
        names = [f"{secrets.token_hex(16)}.{clean.extension}" for _ in range(2)]
        stored: list[str] = []
        try:
            for name, data in zip(names, (clean.photo, clean.thumbnail), strict=True):
                await self.store.put(name, data, clean.content_type)
                stored.append(name)
        except BaseException:
            await asyncio.shield(self._delete(stored))
            raise
        return Photos(*(f"{PHOTO_DIR}/{name}" for name in names))

    async def discard(self, photos: Photos) -> None:
        """Remove stored photos (replaced, or their sign-up failed after they were written)."""
        await self._delete([bare for value in photos if value and (bare := bare_name(value))])

    async def _delete(self, names: list[str]) -> None:
        for name in names:
            await self.store.delete(name)

    async def read_photo(self, name: str) -> tuple[bytes, str] | None:
        """A stored photo's bytes and content type; None for a name we could not have given out, or for anything in
        the photo folder that is not a regular file of its own (a symbolic link, a FIFO, a folder linked elsewhere)."""
        if not PHOTO_NAME.match(name):
            return None
        body = await self.store.get(name)
        return None if body is None else (body, CONTENT_TYPES[name.rsplit(".", 1)[1]])
