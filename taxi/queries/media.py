"""Statements on ``taxi_media_pending``: photo objects that no user may name yet (or any more), so that a failure
between the photo store and the database leaves nothing behind for good."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from taxi import db as dbm

_ADD = dbm.SQL("INSERT INTO taxi_media_pending (name, created) VALUES ({p}, {p}) ON CONFLICT (name) DO NOTHING")
_DROP = dbm.SQL("DELETE FROM taxi_media_pending WHERE name = {p}")
_STALE = dbm.SQL("SELECT name FROM taxi_media_pending WHERE created < {p} ORDER BY created LIMIT {p}")
_NAMED = dbm.SQL("SELECT 1 FROM taxi_user WHERE photo = {p} OR photo_thumbnail = {p} LIMIT 1")
_PHOTOS = dbm.SQL(
    "SELECT id, photo, photo_thumbnail FROM taxi_user WHERE photo IS NOT NULL AND id > {p} ORDER BY id LIMIT {p}"
)


async def add_pending(names: Sequence[str], now: dt.datetime) -> None:
    """Note objects about to be written (or deleted) under these stored names (``photos/<name>``)."""
    for name in names:
        await dbm.execute(_ADD, (name, dbm.timestamp(now)))


async def drop_pending(names: Sequence[str]) -> None:
    for name in names:
        await dbm.execute(_DROP, (name,))


async def stale_pending(before: dt.datetime, limit: int) -> list[str]:
    """Pending names noted before ``before``, oldest first."""
    return [str(row[0]) for row in await dbm.fetch_all(_STALE, (dbm.timestamp(before), limit))]


async def is_named(name: str) -> bool:
    """Whether a user's photo or thumbnail is this stored name."""
    return bool(await dbm.fetch_all(_NAMED, (name, name)))


async def users_with_photos(after_id: int, limit: int) -> list[tuple[int, str, str | None]]:
    """(id, photo, thumbnail) of users with a photo, by id after ``after_id``: a resumable walk over all photos."""
    return [(int(r[0]), str(r[1]), r[2]) for r in await dbm.fetch_all(_PHOTOS, (after_id, limit))]


_UNSIZED = dbm.SQL(
    "SELECT id, photo FROM taxi_user WHERE photo IS NOT NULL AND photo_thumbnail IS NULL AND id > {p} "
    "ORDER BY id LIMIT {p}"
)
_SWAP = dbm.SQL(
    "UPDATE taxi_user SET photo = {p}, photo_thumbnail = {p} "
    "WHERE id = {p} AND photo IS NOT DISTINCT FROM {p} AND photo_thumbnail IS NOT DISTINCT FROM {p}"
)


async def users_without_thumbnail(after_id: int, limit: int) -> list[tuple[int, str]]:
    """(id, photo) of users whose photo was stored before photos had sizes (no thumbnail), by id after ``after_id``."""
    return [(int(r[0]), str(r[1])) for r in await dbm.fetch_all(_UNSIZED, (after_id, limit))]


async def swap_photos(user_id: int, old: tuple[str | None, str | None], new: tuple[str, str]) -> bool:
    """Replace a user's photos if they are still ``old``; False (nothing changed) if the user changed them since."""
    return await dbm.execute(_SWAP, (*new, user_id, *old)) == 1
