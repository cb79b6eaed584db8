"""Statements on ``taxi_user`` and the refresh token tables (``taxi_revoked_token``, ``taxi_spent_token``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

import peewee

from taxi import db as dbm
from taxi import usernames
from taxi.domain import OPEN, utcnow
from taxi.models import RevokedToken, SpentToken, User
from taxi.queries.rows import select_list
from taxi.schemas import user_out


class UserRow(NamedTuple):
    """A user as the API shows it (never the password)."""

    id: int
    username: str
    first_name: str
    last_name: str
    group: str
    photo: str | None
    photo_thumbnail: str | None = None
    deleted: bool = False  # the account was deleted: trips show "deleted" in its place

    def public(self, media_url: str | None) -> dict[str, Any]:
        return user_out(*self[:-1], media_url=media_url, deleted=bool(self.deleted))


# Columns whose expression is not the field's own name.
_EXPRESSIONS = {"group": "{a}.role", "deleted": "({a}.deleted_at IS NOT NULL)"}


def user_columns(alias: str) -> dict[str, str]:
    """The UserRow columns of the ``taxi_user`` row called ``alias`` in a statement."""
    return {name: _EXPRESSIONS.get(name, "{a}." + name).format(a=alias) for name in UserRow._fields}


_USER = select_list(user_columns("u"), UserRow)
_LOAD_ACTIVE = dbm.SQL(f"SELECT {_USER} FROM taxi_user u WHERE u.id = {{p}} AND u.is_active", name="taxi_load_caller")
# By the case-insensitive key, or (for an account that predates the key and shares it) by the exact name first.
_FIND_LOGIN = dbm.SQL(
    f"SELECT {_USER}, u.password, u.refresh_generation FROM taxi_user u "
    "WHERE (u.username_key = {p} OR u.username = {p}) AND u.is_active "
    "ORDER BY CASE WHEN u.username = {p} THEN 0 ELSE 1 END LIMIT 1"
)
_GENERATION = dbm.SQL("SELECT refresh_generation FROM taxi_user WHERE id = {p} AND is_active")
_NEXT_GENERATION = dbm.SQL("UPDATE taxi_user SET refresh_generation = refresh_generation + 1 WHERE id = {p}")
_SPEND = dbm.SQL(
    "INSERT INTO taxi_spent_token (jti, user_id, expires_at) VALUES ({p}, {p}, {p}) ON CONFLICT (jti) DO NOTHING"
)
_PASSWORD = dbm.SQL("SELECT password FROM taxi_user WHERE id = {p} AND is_active")
_IS_REVOKED = dbm.SQL("SELECT 1 FROM taxi_revoked_token WHERE jti = {p}")


class UsernameTaken(Exception):
    """The username belongs to another account."""


async def load_active(user_id: int) -> UserRow | None:
    """The active user with this id, or None if they were deleted or deactivated."""
    rows = await dbm.fetch_all(_LOAD_ACTIVE, (user_id,))
    return UserRow._make(rows[0]) if rows else None


async def password_hash(user_id: int) -> str | None:
    """An active user's password hash, or None."""
    rows = await dbm.fetch_all(_PASSWORD, (user_id,))
    return str(rows[0][0]) if rows else None


class LoginRow(NamedTuple):
    user: UserRow
    password_hash: str
    refresh_generation: int


async def find_for_login(username: str) -> LoginRow | None:
    """The active user a typed username names (whatever its case or Unicode form), with what log-in needs."""
    rows = await dbm.fetch_all(_FIND_LOGIN, (usernames.key(username), username, username))
    if not rows:
        return None
    *fields, hashed, generation = rows[0]
    return LoginRow(UserRow._make(fields), hashed, int(generation))


async def create(
    username: str,
    password_hash: str,
    first_name: str,
    last_name: str,
    group: str,
    photo: str | None,
    photo_thumbnail: str | None = None,
) -> UserRow:
    """Insert a user; UsernameTaken if the username is in use, whatever its case (the database decides)."""
    try:
        user = await User.aio_create(
            username=username,
            username_key=usernames.key(username),
            password=password_hash,
            first_name=first_name,
            last_name=last_name,
            group=group,
            photo=photo,
            photo_thumbnail=photo_thumbnail,
        )
    except peewee.IntegrityError:
        raise UsernameTaken(username) from None
    return UserRow(user.id, username, first_name, last_name, group, photo, photo_thumbnail)


async def is_revoked(jti: str) -> bool:
    return bool(await dbm.fetch_all(_IS_REVOKED, (jti,)))


async def revoke(jti: str, expires: dt.datetime) -> None:
    """Remember a refresh token as revoked until it would have expired, and forget the ones past that."""
    await RevokedToken.insert(jti=jti, expires_at=expires).on_conflict_ignore().aio_execute()
    await RevokedToken.delete().where(RevokedToken.expires_at < utcnow()).aio_execute()


async def refresh_generation(user_id: int) -> int | None:
    """The generation an active user's refresh tokens must carry, or None if the user is gone or inactive."""
    rows = await dbm.fetch_all(_GENERATION, (user_id,))
    return int(rows[0][0]) if rows else None


async def revoke_all_refresh_tokens(user_id: int) -> None:
    """Invalidate every refresh token of a user at once: each carries the generation this raises."""
    await dbm.execute(_NEXT_GENERATION, (user_id,))


async def spend(jti: str, user_id: int, expires: dt.datetime) -> bool:
    """Record a refresh token as exchanged; False if it already was (the primary key lets one caller win)."""
    inserted = await dbm.execute(_SPEND, (jti, user_id, dbm.timestamp(expires)))
    await SpentToken.delete().where(SpentToken.expires_at < utcnow()).aio_execute()
    return inserted == 1


_SET_NAMES = dbm.SQL("UPDATE taxi_user SET first_name = {p}, last_name = {p} WHERE id = {p} AND is_active")
_PHOTOS = dbm.SQL("SELECT photo, photo_thumbnail FROM taxi_user WHERE id = {p} AND is_active")
# Compare and set: the photos are replaced only if they are still the ones read, so of two concurrent changes
# each knows exactly which files it replaced (and may delete).
_SAME_PHOTOS = "photo IS NOT DISTINCT FROM {p} AND photo_thumbnail IS NOT DISTINCT FROM {p}"
_SET_PHOTOS = dbm.SQL(
    "UPDATE taxi_user SET photo = {p}, photo_thumbnail = {p} WHERE id = {p} AND is_active AND " + _SAME_PHOTOS
)
_OPEN_TRIP = (
    "SELECT 1 FROM taxi_trip WHERE (rider_id = {p} OR driver_id = {p}) AND status IN ("
    + ", ".join(f"'{status}'" for status in OPEN)
    + ")"
)
_HAS_OPEN_TRIP = dbm.SQL(_OPEN_TRIP + " LIMIT 1")
# The row stays for the trips that name it; everything that identified the person goes. The username is one no
# sign-up can choose (":" is outside the username rule), so the chosen one is free again; the raised generation
# revokes every refresh token; an unusable password hash and is_active keep anyone from logging in.
_DELETE = dbm.SQL(
    "UPDATE taxi_user SET is_active = FALSE, deleted_at = {p}, username = {p}, username_key = NULL, "
    "first_name = '', last_name = '', photo = NULL, photo_thumbnail = NULL, password = '!', "
    "refresh_generation = refresh_generation + 1 "
    f"WHERE id = {{p}} AND is_active AND {_SAME_PHOTOS} AND NOT EXISTS ({_OPEN_TRIP})"
)


class Photos(NamedTuple):
    """A user's stored photo and thumbnail names (both None when there is no photo)."""

    photo: str | None
    thumbnail: str | None


class HasOpenTrip(Exception):
    """The user rides or drives a trip that is not finished."""


async def set_names(user_id: int, first_name: str, last_name: str) -> UserRow | None:
    """Change an active user's names; the user as stored now, or None if they are no longer active."""
    await dbm.execute(_SET_NAMES, (first_name, last_name, user_id))
    return await load_active(user_id)


async def photos(user_id: int) -> Photos | None:
    """An active user's photo names, or None if the user is gone or inactive."""
    rows = await dbm.fetch_all(_PHOTOS, (user_id,))
    return Photos(*rows[0]) if rows else None


async def replace_photos(user_id: int, new: Photos) -> Photos | None:
    """Store the new photo names; return the replaced ones, or None (nothing changed) if the user is inactive."""
    while True:
        old = await photos(user_id)
        if old is None:
            return None
        if await dbm.execute(_SET_PHOTOS, (*new, user_id, *old)) == 1:
            return old
        # Another change came between the read and the write: read what it stored, and replace that.


async def delete(user_id: int) -> Photos | None:
    """Delete an account as described at ``_DELETE``; return its photo names (to remove), or None if the user was
    already gone. HasOpenTrip if a trip of theirs is not finished."""
    while True:
        old = await photos(user_id)
        if old is None:
            return None
        values = (dbm.timestamp(utcnow()), f"deleted:{user_id}", user_id, *old, user_id, user_id)
        if await dbm.execute(_DELETE, values) == 1:
            return old
        if await dbm.fetch_all(_HAS_OPEN_TRIP, (user_id, user_id)):
            raise HasOpenTrip(user_id)
        # The photo changed between the read and the write: read again.


# The administration's reads and writes (the ``taxi users`` commands), which look at inactive accounts too.


class AccountRow(NamedTuple):
    """A user as an administrator sees it: the public fields, whether it may log in, and when it signed up."""

    id: int
    username: str
    first_name: str
    last_name: str
    group: str
    photo: str | None
    is_active: bool
    date_joined: dt.datetime


_ACCOUNT_FIELDS = (
    User.id,
    User.username,
    User.first_name,
    User.last_name,
    User.group,
    User.photo,
    User.is_active,
    User.date_joined,
)
_SET_ACTIVE = dbm.SQL(
    "UPDATE taxi_user SET is_active = {p}, refresh_generation = refresh_generation + {p} WHERE id = {p}"
)


def _account(user: User) -> AccountRow:
    return AccountRow(*(getattr(user, f.name) for f in _ACCOUNT_FIELDS))


async def accounts(group: str | None = None, search: str | None = None) -> list[AccountRow]:
    """Every user, oldest first; only those of ``group``, and those whose username or names contain ``search``
    (whatever its case)."""
    query = User.select(*_ACCOUNT_FIELDS).order_by(User.id)
    if group:
        query = query.where(User.group == group)
    if search:
        query = query.where(
            User.username.contains(search) | User.first_name.contains(search) | User.last_name.contains(search)
        )
    return [_account(user) for user in await query.aio_execute()]


async def account(username: str) -> AccountRow | None:
    """The user a typed username names, active or not: the exact name first, else the case-insensitive key."""
    for condition in (User.username == username, User.username_key == usernames.key(username)):
        found = await User.select(*_ACCOUNT_FIELDS).where(condition).limit(1).aio_execute()
        if found:
            return _account(found[0])
    return None


async def set_active(user_id: int, active: bool) -> None:
    """Allow or forbid a user to log in. Deactivating also retires every refresh token the user holds, so a
    later reactivation does not bring them back."""
    await dbm.execute(_SET_ACTIVE, (active, 0 if active else 1, user_id))
