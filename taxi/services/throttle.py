"""Attempt limits (log-in brute force): fixed windows per key, shared through Redis when it is configured.

Each attempt counts before any password work is done, so a flood costs us one Redis round trip, not a
bcrypt hash. If Redis is unreachable the limit falls back to this worker's own memory rather than off.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("taxi.throttle")


class Throttle(Protocol):
    async def hit(self, key: str, limit: int, window: int) -> int:
        """Count one attempt for ``key``; return 0 if allowed, else the seconds until the window resets."""


class MemoryThrottle:
    """Per-process fixed windows, bounded in size (old windows are swept when the table grows)."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._windows: dict[str, tuple[float, int]] = {}
        self._max_keys = max_keys

    async def hit(self, key: str, limit: int, window: int) -> int:
        now = time.monotonic()
        start, count = self._windows.get(key, (now, 0))
        if now - start >= window:
            start, count = now, 0
        count += 1
        if len(self._windows) >= self._max_keys and key not in self._windows:
            self._sweep(now, window)
        self._windows[key] = (start, count)
        return 0 if count <= limit else max(1, int(start + window - now + 0.999))

    def _sweep(self, now: float, window: int) -> None:
        for key in [k for k, (start, _) in self._windows.items() if now - start >= window]:
            del self._windows[key]
        while len(self._windows) >= self._max_keys:  # still full of live windows: drop the oldest
            del self._windows[next(iter(self._windows))]


class RedisThrottle:
    """Fixed windows in Redis (SET NX EX + INCR in one transaction), so every worker and machine shares them."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self._redis = client
        # Keys, unlike pub/sub channels, belong to the database of the client's URL: that number already
        # separates deployments, so only the prefix is added here (channels carry it: channel_namespace).
        self._prefix = f"{prefix}throttle:"
        self._fallback = MemoryThrottle()
        self._failing = False

    async def hit(self, key: str, limit: int, window: int) -> int:
        name = self._prefix + key
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(name, 0, ex=window, nx=True)  # opens the window once (works on any Redis version)
                pipe.incr(name)
                pipe.ttl(name)
                _, count, ttl = await pipe.execute()
        except (RedisError, OSError) as exc:
            if not self._failing:
                self._failing = True
                log.warning("throttle: Redis unavailable (%r); limiting per worker until it is back", exc)
            return await self._fallback.hit(key, limit, window)
        if self._failing:
            self._failing = False
            log.warning("throttle: Redis is back; limits are shared again")
        return 0 if int(count) <= limit else max(1, int(ttl))
