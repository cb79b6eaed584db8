"""Statements on ``taxi_user`` and ``taxi_revoked_token``."""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

import peewee

from taxi import db as dbm
from taxi.domain import utcnow
from taxi.models import RevokedToken, User
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

    def public(self, public_url: str | None) -> dict[str, Any]:
        return user_out(*self, public_url=public_url)


def user_columns(alias: str) -> dict[str, str]:
    """The UserRow columns of the ``taxi_user`` row called ``alias`` in a statement."""
    return {name: f"{alias}.{'role' if name == 'group' else name}" for name in UserRow._fields}


_USER = select_list(user_columns("u"), UserRow)
_LOAD_ACTIVE = dbm.SQL(f"SELECT {_USER} FROM taxi_user u WHERE u.id = {{p}} AND u.is_active", name="taxi_load_caller")
_FIND_LOGIN = dbm.SQL(f"SELECT {_USER}, u.password FROM taxi_user u WHERE u.username = {{p}} AND u.is_active")
_IS_REVOKED = dbm.SQL("SELECT 1 FROM taxi_revoked_token WHERE jti = {p}")


class UsernameTaken(Exception):
    """The username belongs to another account."""


async def load_active(user_id: int) -> UserRow | None:
    """The active user with this id, or None if they were deleted or deactivated."""
    rows = await dbm.fetch_all(_LOAD_ACTIVE, (user_id,))
    return UserRow._make(rows[0]) if rows else None


async def find_for_login(username: str) -> tuple[UserRow, str] | None:
    """The active user with this username and their password hash, or None."""
    rows = await dbm.fetch_all(_FIND_LOGIN, (username,))
    if not rows:
        return None
    *fields, hashed = rows[0]
    return UserRow._make(fields), hashed


async def create(
    username: str, password_hash: str, first_name: str, last_name: str, group: str, photo: str | None
) -> UserRow:
    """Insert a user; UsernameTaken if the username is in use."""
    try:
        user = await User.aio_create(
            username=username,
            password=password_hash,
            first_name=first_name,
            last_name=last_name,
            group=group,
            photo=photo,
        )
    except peewee.IntegrityError:
        raise UsernameTaken(username) from None
    return UserRow(user.id, username, first_name, last_name, group, photo)


async def is_revoked(jti: str) -> bool:
    return bool(await dbm.fetch_all(_IS_REVOKED, (jti,)))


async def revoke(jti: str, expires: dt.datetime) -> None:
    """Remember a refresh token as revoked until it would have expired, and forget the ones past that."""
    await RevokedToken.insert(jti=jti, expires_at=expires).on_conflict_ignore().aio_execute()
    await RevokedToken.delete().where(RevokedToken.expires_at < utcnow()).aio_execute()
