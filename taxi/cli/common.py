"""What the commands share: their settings, the database they open for one command, and their errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from peewee_async.databases import AioDatabase

from taxi import db as dbm
from taxi.config import Settings
from taxi.migrations import LATEST, current_version, migrate


class CommandError(Exception):
    """A command could not do its work; the message says why (printed as one line, exit status 1)."""


def settings(env: Mapping[str, str]) -> Settings:
    """The server's settings, without a signing key: these commands issue no token."""
    return Settings.from_env(env, signing=False)


@asynccontextmanager
async def database(config: Settings, *, schema: bool = True) -> AsyncIterator[AioDatabase]:
    """The configured database, connected and bound to the models for the length of one command.

    With ``schema``, as the server does: the embedded SQLite database is brought up to date, and a PostgreSQL
    database that is not is refused with what to run."""
    url = config.database
    handle = dbm.make_database(url, 1)
    try:
        await handle.aio_connect()
        version = await current_version(handle)
    except Exception as exc:  # psycopg2 or sqlite3, whatever their driver says: one readable line
        await handle.aio_close()
        raise CommandError(f"cannot open the database {url.redacted()}: {str(exc).strip()}") from exc
    dbm.db.initialize(handle)
    try:
        if schema and version < LATEST:
            if not url.is_sqlite:
                raise CommandError(
                    f"the database {url.redacted()} is at schema version {version}, this needs {LATEST}: "
                    "run `taxi migrate` first"
                )
            await migrate(handle)
        yield handle
    finally:
        await handle.aio_close()
