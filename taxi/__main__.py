"""Command line: ``python -m taxi migrate`` creates or upgrades the schema of ``TAXI_DATABASE_URL``;
``python -m taxi media migrate --to s3|reprocess`` maintains the stored photos (``taxi.media_cli``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

from taxi import db as dbm
from taxi import media_cli
from taxi.config import DEFAULT_DATABASE_URL, ConfigError, DatabaseURL
from taxi.errors import ServiceUnavailable
from taxi.migrations import LATEST, current_version, migrate


async def _migrate(url: DatabaseURL) -> int:
    database = dbm.make_database(url, 1)
    await database.aio_connect()
    try:
        applied = await migrate(database)
        version = await current_version(database)
    finally:
        await database.aio_close()
    if applied:
        print(f"{url.redacted()}: applied {', '.join(map(str, applied))}; schema is at version {version}")
    else:
        print(f"{url.redacted()}: already at version {version} (latest {LATEST}); nothing to do")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taxi", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="create or upgrade the database schema (safe to run again)")
    media_cli.add(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "media":
        try:
            return int(args.run(args, os.environ))
        except ConfigError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            return 2
        except ServiceUnavailable as exc:
            print(f"unavailable: {exc.detail} ({exc.cause})", file=sys.stderr)
            return 1
    try:
        # Migrating needs only the database: no signing key, no Redis.
        url = DatabaseURL.parse(os.environ.get("TAXI_DATABASE_URL") or DEFAULT_DATABASE_URL)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "migrate":
        return asyncio.run(_migrate(url))
    return 1


if __name__ == "__main__":
    sys.exit(main())
