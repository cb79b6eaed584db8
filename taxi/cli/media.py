"""``taxi media migrate --to s3`` and ``taxi media reprocess`` (also ``python -m taxi media ...``): maintenance of
stored photos. Each parser carries the function that runs it (``args.run(args, env)``)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from taxi import db as dbm
from taxi.app import photo_store
from taxi.cli.common import settings
from taxi.config import ConfigError, Settings
from taxi.services import media_jobs
from taxi.services.media import LocalStore, Media


def add(sub: Any) -> None:
    media = sub.add_parser("media", help="copy photos into the bucket, or rewrite old photos in sizes")
    actions = media.add_subparsers(dest="action", required=True, metavar="ACTION")
    move = actions.add_parser(
        "migrate",
        help="copy the photos in TAXI_MEDIA_ROOT into the S3 bucket (TAXI_S3_*); safe to stop and run again",
    )
    move.add_argument("--to", required=True, choices=["s3"], help="where to copy them")
    move.set_defaults(run=run_migrate)
    again = actions.add_parser(
        "reprocess",
        help="rewrite photos stored before photos had sizes (no thumbnail): sizes, no metadata; safe to run again",
    )
    again.set_defaults(run=run_reprocess)


def run_migrate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    config = settings(env)
    if not config.s3_bucket:
        raise ConfigError("TAXI_S3_BUCKET: required to copy photos into a bucket")
    source = LocalStore(config.media_root)
    target = photo_store(dataclasses.replace(config, media_storage="s3"))

    async def work() -> Counter[str]:
        await target.start()
        try:
            return await media_jobs.migrate(source, target, _say)
        finally:
            await target.stop()

    done = _with_database(config, work)
    print(f"media migrate --to s3 ({config.media_root} -> bucket {config.s3_bucket}): {media_jobs.summary(done)}")
    return 0 if not done["missing"] else 1


def run_reprocess(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    config = settings(env)
    media = Media(photo_store(config), config.max_photo_bytes, config.max_photo_pixels, config.photo_processes)

    async def work() -> Counter[str]:
        await media.start(sweep_every=None)
        try:
            return await media_jobs.reprocess(media, _say)
        finally:
            await media.stop()

    done = _with_database(config, work)
    print(f"media reprocess ({config.media_storage}): {media_jobs.summary(done)}")
    return 0


def _with_database(config: Settings, work: Callable[[], Awaitable[Counter[str]]]) -> Counter[str]:
    async def run() -> Counter[str]:
        database = await dbm.connect(config.database, 2)
        try:
            return await work()
        finally:
            await database.aio_close()

    return asyncio.run(run())


def _say(line: str) -> None:
    print(line, flush=True)
