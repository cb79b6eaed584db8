"""The caller's own account: read it, rename it, change its photo, delete it.

A deleted account keeps its row, so that trips keep their other party (shown as ``deleted``); everything that
identified the person is cleared, the username is free again, and every refresh token is revoked.
"""

from __future__ import annotations

from typing import Any

from taxi.errors import Conflict, PermissionDenied
from taxi.queries import users
from taxi.schemas import ProfileChange
from taxi.security import check_password
from taxi.services.accounts import Caller, user_inactive
from taxi.services.media import Media

OPEN_TRIP = "Finish or cancel your open trips before deleting the account."
WRONG_PASSWORD = "Wrong password."


class Profiles:
    """Profile operations over the user table and the photo store; ``media_url`` is where photo URLs start."""

    def __init__(self, media: Media, media_url: str | None) -> None:
        self.media = media
        self.media_url = media_url

    def me(self, caller: Caller) -> dict[str, Any]:
        return caller.public(self.media_url)

    async def rename(self, caller: Caller, change: ProfileChange) -> dict[str, Any]:
        """Set the names given (None keeps one); the user as stored afterwards."""
        first = caller.first_name if change.first_name is None else change.first_name
        last = caller.last_name if change.last_name is None else change.last_name
        user = await users.set_names(caller.id, first, last)
        if user is None:
            raise user_inactive()
        return user.public(self.media_url)

    async def change_photo(self, caller: Caller, upload: bytes) -> dict[str, Any]:
        """Store the new photo, point the user at it, then remove the files it replaced."""
        new = await self.media.store_photo(upload)
        try:
            old = await users.replace_photos(caller.id, new)
        except BaseException:
            await self.media.discard(new)
            raise
        if old is None:  # deleted or deactivated meanwhile
            await self.media.discard(new)
            raise user_inactive()
        await self.media.settle(new)
        await self.media.discard(old)
        return caller._replace(photo=new.photo, photo_thumbnail=new.thumbnail).public(self.media_url)

    async def delete(self, caller: Caller, password: str) -> None:
        """Delete the caller's account once the password is confirmed; 409 while a trip of theirs is open."""
        hashed = await users.password_hash(caller.id)
        if hashed is None:
            raise user_inactive()
        if not await check_password(password, hashed):
            raise PermissionDenied(WRONG_PASSWORD, code="wrong_password")
        try:
            old = await users.delete(caller.id)
        except users.HasOpenTrip:
            raise Conflict(OPEN_TRIP, code="open_trip") from None
        if old is None:
            raise user_inactive()
        await self.media.discard(old)
