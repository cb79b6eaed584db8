"""Maintenance of stored photos, for the command line: copy local photos into the bucket (``media migrate --to s3``)
and rewrite photos stored before they had sizes (``media reprocess``).

Both walk the users by id and can be stopped and run again: what is done is recognised and skipped (an object
already in the bucket; a user who has a thumbnail). Each returns what it did, counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

from taxi.errors import ValidationFailed
from taxi.queries import media as queries
from taxi.queries.users import Photos
from taxi.services.images import CONTENT_TYPES
from taxi.services.media import Media, PhotoStore, bare_name

log = logging.getLogger("taxi.media")

BATCH = 200
Progress = Callable[[str], None]


async def migrate(source: PhotoStore, target: PhotoStore, progress: Progress | None = None) -> Counter[str]:
    """Copy every photo and thumbnail that a user names from ``source`` into ``target`` unless it is there already.

    Counts: ``copied``, ``already there``, ``missing`` (named by a user, in neither store).
    """
    done: Counter[str] = Counter()
    after = 0
    while rows := await queries.users_with_photos(after, BATCH):
        for user_id, photo, thumbnail in rows:
            for value in (photo, thumbnail):
                name = bare_name(value) if value else None
                if name is None:
                    continue
                if await target.exists(name):
                    done["already there"] += 1
                    continue
                body = await source.get(name)
                if body is None:
                    done["missing"] += 1
                    log.warning("user %d: %s is not in the local store", user_id, value)
                    continue
                await target.put(name, body, CONTENT_TYPES[name.rsplit(".", 1)[1]])
                done["copied"] += 1
            after = user_id
        if progress is not None:
            progress(f"up to user {after}: " + _counts(done))
    return done


async def reprocess(media: Media, progress: Progress | None = None) -> Counter[str]:
    """Rewrite each photo that has no thumbnail (stored before photos had sizes) as a new photo and thumbnail
    without metadata; the user is pointed at them and the old file removed.

    Counts: ``rewritten``, ``missing`` (not in the store), ``unreadable`` (not an image we accept: left as it is),
    ``changed meanwhile`` (the user uploaded a new photo while this ran: theirs is kept).
    """
    done: Counter[str] = Counter()
    after = 0
    while rows := await queries.users_without_thumbnail(after, BATCH):
        for user_id, photo in rows:
            after = user_id
            done[await _reprocess_one(media, user_id, photo)] += 1
        if progress is not None:
            progress(f"up to user {after}: " + _counts(done))
    return done


async def _reprocess_one(media: Media, user_id: int, photo: str) -> str:
    name = bare_name(photo)
    body = await media.store.get(name) if name else None
    if body is None:
        log.warning("user %d: %s is not in the store", user_id, photo)
        return "missing"
    try:
        new = await media.store_photo(body)
    except ValidationFailed as exc:
        log.warning("user %d: %s cannot be rewritten: %s", user_id, photo, exc.detail)
        return "unreadable"
    if not await queries.swap_photos(user_id, (photo, None), (new.photo or "", new.thumbnail or "")):
        await media.discard(new)
        return "changed meanwhile"
    await media.settle(new)
    await media.discard(Photos(photo, None))
    return "rewritten"


def _counts(done: Counter[str]) -> str:
    return ", ".join(f"{count} {what}" for what, count in sorted(done.items())) or "nothing to do"


def summary(done: Counter[str]) -> str:
    """One line for the operator."""
    return _counts(done)
