"""Photos in an S3-compatible bucket (any endpoint that speaks S3: AWS, MinIO, SeaweedFS, ...), through aiobotocore.

One client per worker, opened at start-up. Every call has short timeouts and no retries of its own: an object store
that is away makes a photo upload answer 503 at once, instead of holding the request while the client retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from taxi.errors import ServiceUnavailable

log = logging.getLogger("taxi.media")

PREFIX = "photos/"
# A photo's name is random and never reused, so what it names never changes: caches may keep it for a year.
CACHE_CONTROL = "public, max-age=31536000, immutable"
RETRY_AFTER = 5  # seconds: an object store restarts in a few
# What a store that is away, slow or refusing us looks like from here (aiohttp's errors are OSErrors or timeouts).
STORE_ERRORS = (BotoCoreError, ClientError, OSError, asyncio.TimeoutError)


def store_unavailable(exc: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(
        "Photo storage is temporarily unavailable; try again shortly.", retry_after=RETRY_AFTER, cause=repr(exc)
    )


class S3Store:
    """Objects ``photos/<name>`` in one bucket. ``start`` opens the client on the running loop; ``stop`` closes it."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str | None,
        region: str,
        access_key: str | None,
        secret_key: str | None,
        url_lifetime: int,
        timeout: float = 3.0,
    ) -> None:
        self.bucket = bucket
        self.url_lifetime = url_lifetime
        self._client_args: dict[str, Any] = {
            "endpoint_url": endpoint,
            "region_name": region,
            "aws_access_key_id": access_key,
            "aws_secret_access_key": secret_key,
            "config": Config(
                connect_timeout=min(timeout, 1.0),
                read_timeout=timeout,
                retries={"max_attempts": 1, "mode": "standard"},
                signature_version="s3v4",
                # Path-style (endpoint/bucket/key) works with every S3-compatible server, virtual hosts need DNS.
                s3={"addressing_style": "path"},
            ),
        }
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    async def start(self) -> None:
        self._stack = contextlib.AsyncExitStack()
        self._client = await self._stack.enter_async_context(get_session().create_client("s3", **self._client_args))

    async def stop(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()
        self._stack = self._client = None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("S3Store.start() was not called in this process")
        return self._client

    async def put(self, name: str, body: bytes, content_type: str) -> None:
        try:
            await self.client.put_object(
                Bucket=self.bucket, Key=PREFIX + name, Body=body, ContentType=content_type, CacheControl=CACHE_CONTROL
            )
        except STORE_ERRORS as exc:
            raise store_unavailable(exc) from exc

    async def delete(self, name: str) -> None:
        try:
            await self.client.delete_object(Bucket=self.bucket, Key=PREFIX + name)
        except STORE_ERRORS as exc:
            raise store_unavailable(exc) from exc

    async def get(self, name: str) -> bytes | None:
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=PREFIX + name)
            async with response["Body"] as stream:
                return bytes(await stream.read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                return None
            raise store_unavailable(exc) from exc
        except STORE_ERRORS as exc:
            raise store_unavailable(exc) from exc

    async def exists(self, name: str) -> bool:
        try:
            await self.client.head_object(Bucket=self.bucket, Key=PREFIX + name)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise store_unavailable(exc) from exc
        except STORE_ERRORS as exc:
            raise store_unavailable(exc) from exc
        return True

    async def url(self, name: str) -> str | None:
        """A presigned GET of the object, valid ``url_lifetime`` seconds (signed here: no request is made)."""
        url: str = await self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": PREFIX + name}, ExpiresIn=self.url_lifetime
        )
        return url
