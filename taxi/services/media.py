"""Photos: an upload checked and re-encoded in two sizes (``taxi.services.images``), kept in a photo store under
names we choose, found again by name, and removed when replaced.

The store is a folder (``LocalStore``) or an S3 bucket (``taxi.services.s3_store``); names are random and never
reused, so a stored photo never changes. Every object is noted in ``taxi_media_pending`` before it is written and
before it is deleted, and the note is dropped once a user names it (or it is gone): a failure anywhere between the
store and the database leaves a note, and ``sweep`` later removes what no user names.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import re
import secrets
import stat
from pathlib import Path
from typing import Protocol

from taxi.domain import utcnow
from taxi.errors import ServiceUnavailable
from taxi.queries import media as pending
from taxi.queries.users import Photos
from taxi.services.image_work import ImageWork
from taxi.services.images import ACCEPTED, CONTENT_TYPES, FORMATS

log = logging.getLogger("taxi.media")

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

    async def exists(self, name: str) -> bool: ...

    async def url(self, name: str) -> str | None:
        """Where a client can fetch ``name`` directly (a presigned URL), or None: this server serves the bytes."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


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

    async def exists(self, name: str) -> bool:
        return (self.folder / name).is_file()

    async def url(self, name: str) -> str | None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def bare_name(stored: str) -> str | None:
    """The store's name for a stored value (``photos/<hex>.<ext>``), or None if it is not one we gave out."""
    bare = stored.removeprefix(f"{PHOTO_DIR}/")
    return bare if PHOTO_NAME.match(bare) else None


# What a failed removal looks like: the store away (503) or a local file that cannot be removed. The pending note
# stays, and a later sweep tries again.
_REMOVAL_ERRORS = (ServiceUnavailable, OSError)
SWEEP_GRACE = dt.timedelta(minutes=10)  # far longer than any upload takes between its write and its user's row
SWEEP_INTERVAL = 60.0  # seconds between two sweeps of one worker
SWEEP_BATCH = 100
SWEEP_BATCHES = 10


class Media:
    """Checks, re-encodes and stores photos in ``store``; limits come from the settings."""

    def __init__(self, store: PhotoStore, max_bytes: int, max_pixels: int, processes: int = 0) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.max_pixels = max_pixels
        self._sweeper: asyncio.Task[None] | None = None
        self._images = ImageWork(processes)  # decoding and encoding, in child processes (see image_work)

    async def start(self, sweep_every: float | None = SWEEP_INTERVAL) -> None:
        """Open the store on this worker's loop, and sweep leftovers now and then (None: never)."""
        await self.store.start()
        if sweep_every is not None:
            self._sweeper = asyncio.create_task(self._sweep_forever(sweep_every), name="media-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        await self._images.shutdown()
        await self.store.stop()

    async def store_photo(self, body: bytes) -> Photos:
        """Check, re-encode and store an upload in both sizes; return their media-relative names
        (``photos/<hex>.<ext>``), still pending until ``settle`` says a user names them."""
        clean = await self._images.clean(body, self.max_bytes, self.max_pixels)
        names = [f"{secrets.token_hex(16)}.{clean.extension}" for _ in range(2)]
        values = [f"{PHOTO_DIR}/{name}" for name in names]
        await pending.add_pending(values, utcnow())  # the database away: a 503 before anything is written
        try:
            for name, data in zip(names, (clean.photo, clean.thumbnail), strict=True):
                await self.store.put(name, data, clean.content_type)
        except BaseException:
            await asyncio.shield(self._remove(values))
            raise
        return Photos(*values)

    async def settle(self, photos: Photos) -> None:
        """A user names these photos now: they are no longer pending (a failure here only leaves work for a sweep,
        which keeps what a user names)."""
        try:
            await pending.drop_pending([value for value in photos if value])
        except ServiceUnavailable as exc:
            log.warning("photos %s stored, their pending notes kept: %r", photos, exc)

    async def discard(self, photos: Photos) -> None:
        """Remove stored photos (replaced, or their sign-up failed after they were written)."""
        names = [value for value in photos if value and bare_name(value)]
        if not names:
            return
        try:
            await pending.add_pending(names, utcnow())
        except ServiceUnavailable as exc:
            log.warning("photos %s left in the store (no pending note: %r)", names, exc)
            return
        await self._remove(names)

    async def _remove(self, names: list[str]) -> None:
        """Delete objects and then their pending notes; what cannot be deleted now stays noted for a sweep."""
        for value in names:
            bare = bare_name(value)
            try:
                if bare is not None:
                    await self.store.delete(bare)
                await pending.drop_pending([value])
            except _REMOVAL_ERRORS as exc:
                log.warning("photo %s not removed now, left for a later sweep: %r", value, exc)

    async def sweep(self, grace: dt.timedelta = SWEEP_GRACE) -> int:
        """Remove the objects noted more than ``grace`` ago that no user names; drop the notes of those a user
        names. Returns how many objects were removed (or tried)."""
        removed = 0
        for _ in range(SWEEP_BATCHES):  # bounded: notes that cannot be removed now come back in every batch
            stale = await pending.stale_pending(utcnow() - grace, SWEEP_BATCH)
            orphans = [value for value in stale if not await pending.is_named(value)]
            await pending.drop_pending([value for value in stale if value not in orphans])
            await self._remove(orphans)
            removed += len(orphans)
            if len(stale) < SWEEP_BATCH:
                break
        return removed

    async def _sweep_forever(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                if removed := await self.sweep():
                    log.info("removed %d photo objects that no user names", removed)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("sweeping pending photos failed; trying again later")

    async def locate(self, name: str) -> tuple[bytes, str] | str | None:
        """A stored photo: its bytes and content type when this server serves it, a URL to redirect to when the
        store serves it (a presigned URL), or None for a name we could not have given out or that is not there
        (or, in a folder, is not a regular file of its own: a symbolic link, a FIFO, a folder linked elsewhere)."""
        if not PHOTO_NAME.match(name):
            return None
        url = await self.store.url(name)
        if url is not None:
            return url
        body = await self.store.get(name)
        return None if body is None else (body, CONTENT_TYPES[name.rsplit(".", 1)[1]])
