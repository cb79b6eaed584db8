"""Statements on ``taxi_user`` and the refresh token tables (``taxi_revoked_token``, ``taxi_spent_token``)."""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

import peewee

from taxi import db as dbm
from taxi import usernames
from taxi.domain import utcnow
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

    def public(self, public_url: str | None) -> dict[str, Any]:
        return user_out(*self, public_url=public_url)


def user_columns(alias: str) -> dict[str, str]:
    """The UserRow columns of the ``taxi_user`` row called ``alias`` in a statement."""
    return {name: f"{alias}.{'role' if name == 'group' else name}" for name in UserRow._fields}


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
_IS_REVOKED = dbm.SQL("SELECT 1 FROM taxi_revoked_token WHERE jti = {p}")


class UsernameTaken(Exception):
    """The username belongs to another account."""


async def load_active(user_id: int) -> UserRow | None:
    """The active user with this id, or None if they were deleted or deactivated."""
    rows = await dbm.fetch_all(_LOAD_ACTIVE, (user_id,))
    return UserRow._make(rows[0]) if rows else None


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
    username: str, password_hash: str, first_name: str, last_name: str, group: str, photo: str | None
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
