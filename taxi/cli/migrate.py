"""``taxi migrate``: create or upgrade the schema of the configured database (safe to run again)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any

from taxi.cli.common import database, settings
from taxi.config import Settings
from taxi.migrations import LATEST, current_version, migrate


def add(sub: Any) -> None:
    command = sub.add_parser("migrate", help="create or upgrade the database schema (safe to run again)")
    command.set_defaults(run=run)


def run(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    return asyncio.run(_migrate(settings(env)))


async def _migrate(config: Settings) -> int:
    url = config.database
    async with database(config, schema=False) as handle:
        applied = await migrate(handle)
        version = await current_version(handle)
    if applied:
        print(f"{url.redacted()}: applied {', '.join(map(str, applied))}; schema is at version {version}")
    else:
        print(f"{url.redacted()}: already at version {version} (latest {LATEST}); nothing to do")
    return 0
