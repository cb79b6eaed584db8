"""Migration 2: usernames unique whatever their case, and what refresh token rotation needs.

``taxi_user.username_key`` holds ``taxi.usernames.key(username)`` (NFKC, case-folded, computed here in Python:
SQLite's ``lower()`` folds ASCII only, PostgreSQL's depends on the database's locale) under a unique index, so
the database itself refuses "Ana" next to "ana". Existing accounts whose names collide that way keep working:
the oldest gets the key, the others keep none (NULL, which a unique index allows any number of) and log in by
their exact name; each such collision is logged.

``taxi_user.refresh_generation`` is the generation a refresh token must carry to be accepted: raising it
revokes every refresh token of that user at once. ``taxi_spent_token`` remembers each refresh token that was
exchanged (rotated), until it would have expired: its primary key lets exactly one of two concurrent
refreshes with the same token succeed.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from peewee_async.databases import AioDatabase, fetchall

from taxi import usernames

log = logging.getLogger("taxi.migrations")


async def fill_username_keys(database: AioDatabase, mark: str) -> None:
    """Give every existing user its key, oldest first; a later user whose key is taken keeps none (logged)."""
    rows = await database.aio_execute_sql("SELECT id, username FROM taxi_user ORDER BY id", fetch_results=fetchall)
    owners: dict[str, int] = {}
    for user_id, username in rows:
        key = usernames.key(username)
        if key in owners:
            log.warning(
                "user %d has the same case-insensitive username as user %d: it keeps logging in with its exact "
                "name, and no new account can take that name in any case",
                user_id,
                owners[key],
            )
            continue
        owners[key] = user_id
        await database.aio_execute_sql(f"UPDATE taxi_user SET username_key = {mark} WHERE id = {mark}", (key, user_id))


_Step = str | Callable[[AioDatabase, str], Awaitable[None]]

POSTGRESQL: tuple[_Step, ...] = (
    "ALTER TABLE taxi_user ADD COLUMN username_key VARCHAR(600)",  # NFKC and case folding may lengthen a name
    "ALTER TABLE taxi_user ADD COLUMN refresh_generation INTEGER NOT NULL DEFAULT 0",
    fill_username_keys,
    "CREATE UNIQUE INDEX taxi_user_username_key_unique ON taxi_user (username_key)",
    """CREATE TABLE taxi_spent_token (
        jti VARCHAR(64) PRIMARY KEY,
        user_id BIGINT NOT NULL REFERENCES taxi_user (id) ON DELETE CASCADE,
        expires_at TIMESTAMPTZ NOT NULL)""",
    "CREATE INDEX taxi_spent_token_expires ON taxi_spent_token (expires_at)",
)
SQLITE: tuple[_Step, ...] = (
    "ALTER TABLE taxi_user ADD COLUMN username_key VARCHAR(600)",
    "ALTER TABLE taxi_user ADD COLUMN refresh_generation INTEGER NOT NULL DEFAULT 0",
    fill_username_keys,
    "CREATE UNIQUE INDEX taxi_user_username_key_unique ON taxi_user (username_key)",
    """CREATE TABLE taxi_spent_token (
        jti VARCHAR(64) PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES taxi_user (id) ON DELETE CASCADE,
        expires_at TEXT NOT NULL)""",
    "CREATE INDEX taxi_spent_token_expires ON taxi_spent_token (expires_at)",
)
