"""Where drivers are, kept where every worker can read it: Redis in production, this process on the embedded default.

Per driver: the last accepted fix (position, heading, speed, time) and the H3 cell it is indexed under;
per cell: the drivers whose last fix is in it; the drivers who switched themselves off; per trip request: the
drivers it was sent to. The store only keeps and finds; what counts as fresh or near is the caller's rule.
"""

from __future__ import annotations

import datetime as dt
import math
import struct
from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from taxi import geo
from taxi.errors import BrokerUnavailable

SENT_TTL_S = 86_400  # who heard a request matters until it is taken; a day bounds what a lost trip leaves


class Fix(NamedTuple):
    """A driver's accepted position; ``at`` is when the server received it (Unix seconds). A tuple: a search
    makes hundreds of them, and a tuple is built in a fraction of a frozen dataclass's time."""

    lat: float
    lng: float
    heading: float | None
    speed: float | None
    at: float

    def out(self) -> dict[str, Any]:
        stamp = dt.datetime.fromtimestamp(self.at, dt.UTC).isoformat(timespec="milliseconds")
        return {
            "lat": self.lat,
            "lng": self.lng,
            "heading": self.heading,
            "speed": self.speed,
            "at": stamp.replace("+00:00", "Z"),
        }

    def encode(self, cell: str) -> bytes:
        """The stored form: latitude, longitude, time, heading and speed as little-endian doubles (NaN for a
        missing value), then the cell's name. A search reads the first three with Redis's Lua struct.unpack."""
        heading, speed = (_NONE if v is None else v for v in (self.heading, self.speed))
        return _PACKED.pack(self.lat, self.lng, self.at, heading, speed) + cell.encode()

    @classmethod
    def decode(cls, value: bytes) -> Fix:
        lat, lng, at, heading, speed = _PACKED.unpack_from(value)
        return cls(lat, lng, None if heading != heading else heading, None if speed != speed else speed, at)


_PACKED = struct.Struct("<ddddd")  # Fix.encode's numbers; _NEAR_SCRIPT unpacks the first three the same way
_NONE = math.nan


def _cell(value: bytes) -> str:
    """The cell a stored fix is indexed under."""
    return value[_PACKED.size :].decode()


class PresenceStore(Protocol):
    async def put_many(self, fixes: list[tuple[int, Fix, str]]) -> None:
        """Keep each (driver, fix, cell): the fix as the driver's last one, indexed under the cell."""

    async def forget(self, driver: int) -> None:
        """Drop the driver's fix and index entry (it went offline)."""

    async def fixes(self, drivers: Iterable[int]) -> dict[int, Fix]:
        """The last fix of each driver that has one."""

    async def near(
        self, cells: Iterable[str], lat: float, lng: float, reach_m: float, fresh_after: float
    ) -> tuple[dict[int, Fix], dict[int, str]]:
        """The drivers indexed under ``cells`` whose last fix is younger than ``fresh_after`` (Unix seconds) and
        within about ``reach_m`` of (``lat``, ``lng``); and, separately, the stale ones found (driver -> cell). A
        coarse filter: the caller checks the distance exactly (the shared store computes it in Redis)."""

    async def unindex(self, drivers: dict[int, str]) -> None:
        """Remove index entries (driver -> cell) found stale by a search."""

    async def set_off(self, driver: int, off: bool) -> None: ...

    async def switched_off(self) -> set[int]: ...

    async def is_off(self, driver: int) -> bool: ...

    async def remember_sent(self, trip_id: str, drivers: Iterable[int]) -> None: ...

    async def take_sent(self, trip_id: str) -> set[int]:
        """The drivers a request was sent to, forgotten as they are read (the request is taken or gone)."""

    async def close(self) -> None: ...


class LocalPresenceStore:
    """The store of the embedded default: dictionaries of this one process."""

    def __init__(self) -> None:
        self._fixes: dict[int, tuple[Fix, str]] = {}
        self._cells: dict[str, set[int]] = {}
        self._off: set[int] = set()
        self._sent: dict[str, set[int]] = {}

    async def put_many(self, fixes: list[tuple[int, Fix, str]]) -> None:
        for driver, fix, cell in fixes:
            previous = self._fixes.get(driver)
            if previous is not None and previous[1] != cell:
                self._discard(driver, previous[1])
            self._cells.setdefault(cell, set()).add(driver)
            self._fixes[driver] = (fix, cell)

    def _discard(self, driver: int, cell: str) -> None:
        members = self._cells.get(cell)
        if members is not None:
            members.discard(driver)
            if not members:
                del self._cells[cell]

    async def forget(self, driver: int) -> None:
        previous = self._fixes.pop(driver, None)
        if previous is not None:
            self._discard(driver, previous[1])

    async def fixes(self, drivers: Iterable[int]) -> dict[int, Fix]:
        return {d: self._fixes[d][0] for d in drivers if d in self._fixes}

    async def near(
        self, cells: Iterable[str], lat: float, lng: float, reach_m: float, fresh_after: float
    ) -> tuple[dict[int, Fix], dict[int, str]]:
        found: dict[int, Fix] = {}
        stale: dict[int, str] = {}
        for cell in cells:
            for driver in self._cells.get(cell, ()):
                fix, indexed = self._fixes[driver]
                if fix.at <= fresh_after:
                    stale[driver] = indexed
                elif geo.distance_m(lat, lng, fix.lat, fix.lng) <= reach_m:
                    found[driver] = fix
        return found, stale

    async def unindex(self, drivers: dict[int, str]) -> None:
        for driver in drivers:
            await self.forget(driver)

    async def set_off(self, driver: int, off: bool) -> None:
        if off:
            self._off.add(driver)
        else:
            self._off.discard(driver)

    async def switched_off(self) -> set[int]:
        return set(self._off)

    async def is_off(self, driver: int) -> bool:
        return driver in self._off

    async def remember_sent(self, trip_id: str, drivers: Iterable[int]) -> None:
        self._sent.setdefault(trip_id, set()).update(drivers)

    async def take_sent(self, trip_id: str) -> set[int]:
        return set(self._sent.pop(trip_id, ()))

    async def close(self) -> None:
        return None


# The search of nearby drivers, run inside Redis: the members of the cells, their fixes, and only the fresh ones
# within reach sent back (a request over a busy district would otherwise move and parse every fix in a few dozen
# cells). The fix format is Fix.encode's: it starts with latitude, longitude and time as doubles, which
# struct.unpack reads in C (parsing text took twice as long, and Redis serves nobody else while a script runs).
# KEYS: the fixes hash, then the cells' sets. ARGV: lat, lng, reach (metres), fresh after (Unix seconds).
# Returns {driver, fix, ...} fresh and within reach, {driver, fix, ...} stale.
_NEAR_SCRIPT = """
local R, RAD = 6371007.180918475, math.pi / 180
local lat, lng = tonumber(ARGV[1]) * RAD, tonumber(ARGV[2]) * RAD
local reach, after = tonumber(ARGV[3]), tonumber(ARGV[4])
local cos_lat, sin, cos, head = math.cos(lat), math.sin, math.cos, struct.unpack
local members = redis.call('SUNION', unpack(KEYS, 2))
local found, stale = {}, {}
for first = 1, #members, 1000 do
    local ids = {unpack(members, first, math.min(first + 999, #members))}
    local values = redis.call('HMGET', KEYS[1], unpack(ids))
    for i, value in ipairs(values) do
        if value then
            local flat, flng, at = head('<ddd', value)
            local out = stale
            if at > after then
                local p2 = flat * RAD
                local h = sin((p2 - lat) / 2) ^ 2 + cos_lat * cos(p2) * sin((flng * RAD - lng) / 2) ^ 2
                out = 2 * R * math.asin(math.min(1, math.sqrt(h))) <= reach and found or nil
            end
            if out then
                out[#out + 1] = ids[i]
                out[#out + 1] = value
            end
        end
    end
end
return {found, stale}
"""


class RedisPresenceStore:
    """The shared store: a hash of fixes, a set per H3 cell, a set of drivers switched off, a set per request.

    Keys carry the deployment's prefix; errors become BrokerUnavailable (the callers' "not now").
    """

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        if client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("the presence store keeps binary values: its Redis client must not decode responses")
        self._redis = client  # replies are bytes (redis-py types them bytes | str)
        self._fixes = f"{prefix}presence:fixes"  # Fix.encode's binary form (text before, as "presence:fix")
        self._cell = f"{prefix}presence:cell:"
        self._off = f"{prefix}presence:off"
        self._sent = f"{prefix}presence:sent:"
        # The cell this process last indexed each of its drivers under: every fix but a driver's first here is then
        # one round trip. If another process moved the driver meanwhile, the driver stays listed in an old cell
        # too, which a search only over-reads (it checks the stored position).
        self._indexed: dict[int, str] = {}
        self._near = client.register_script(_NEAR_SCRIPT)

    async def put_many(self, fixes: list[tuple[int, Fix, str]]) -> None:
        try:
            unknown = [driver for driver, _, _ in fixes if driver not in self._indexed]
            if unknown:  # drivers this process has not indexed yet: where another left them
                for driver, value in zip(unknown, await self._redis.hmget(self._fixes, unknown), strict=True):
                    if value is not None:
                        self._indexed[driver] = _cell(cast(bytes, value))
            async with self._redis.pipeline(transaction=False) as pipe:
                for driver, _, cell in fixes:
                    old = self._indexed.get(driver)
                    if old is not None and old != cell:
                        pipe.srem(self._cell + old, driver)
                    pipe.sadd(self._cell + cell, driver)
                pipe.hset(self._fixes, mapping={str(d): fix.encode(cell) for d, fix, cell in fixes})
                await pipe.execute()
        except RedisError as exc:
            for driver, _, _ in fixes:
                self._indexed.pop(driver, None)
            raise BrokerUnavailable(f"presence: {exc!r}") from exc
        for driver, _, cell in fixes:
            self._indexed[driver] = cell

    async def forget(self, driver: int) -> None:
        self._indexed.pop(driver, None)
        try:
            previous = await self._redis.hget(self._fixes, str(driver))
            async with self._redis.pipeline(transaction=False) as pipe:
                if previous is not None:
                    pipe.srem(self._cell + _cell(cast(bytes, previous)), driver)
                pipe.hdel(self._fixes, str(driver))
                await pipe.execute()
        except RedisError as exc:
            raise BrokerUnavailable(f"presence: {exc!r}") from exc

    async def fixes(self, drivers: Iterable[int]) -> dict[int, Fix]:
        ids = [str(d) for d in drivers]
        if not ids:
            return {}
        try:
            values = await self._redis.hmget(self._fixes, ids)
        except RedisError as exc:
            raise BrokerUnavailable(f"presence: {exc!r}") from exc
        return {int(d): Fix.decode(cast(bytes, v)) for d, v in zip(ids, values, strict=True) if v is not None}

    async def near(
        self, cells: Iterable[str], lat: float, lng: float, reach_m: float, fresh_after: float
    ) -> tuple[dict[int, Fix], dict[int, str]]:
        keys = [self._cell + c for c in cells]
        if not keys:
            return {}, {}
        try:
            found, stale = await self._near(keys=[self._fixes, *keys], args=[lat, lng, reach_m, repr(fresh_after)])
        except RedisError as exc:
            raise BrokerUnavailable(f"presence: {exc!r}") from exc
        fixes = {int(found[i]): Fix.decode(found[i + 1]) for i in range(0, len(found), 2)}
        return fixes, {int(stale[i]): _cell(stale[i + 1]) for i in range(0, len(stale), 2)}

    async def unindex(self, drivers: dict[int, str]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for driver, cell in drivers.items():
                    pipe.srem(self._cell + cell, driver)
                await pipe.execute()
        except RedisError as exc:
            raise BrokerUnavailable(f"presence: {exc!r}") from exc

    async def set_off(self, driver: int, off: bool) -> None:
        try:
            await (self._redis.sadd(self._off, driver) if off else self._redis.srem(self._off, driver))
        except RedisError as exc:
            raise BrokerUnavailable(f"presence: {exc!r}") from exc

    async def switched_off(self) -> set[int]:
        try:
            return {int(m) for m in await self._redis.smembers(self._off)}
        except RedisError as exc:
            raise BrokerUnavailable(f"presence: {exc!r}") from exc

    async def is_off(self, driver: int) -> bool:
        try:
            return bool(await self._redis.sismember(self._off, str(driver)))
        except RedisError as exc:
            raise BrokerUnavailable(f"presence: {exc!r}") from exc

    async def remember_sent(self, trip_id: str, drivers: Iterable[int]) -> None:
        ids = list(drivers)
        if not ids:
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.sadd(self._sent + trip_id, *ids)
                pipe.expire(self._sent + trip_id, SENT_TTL_S)
                await pipe.execute()
        except RedisError as exc:
            raise BrokerUnavailable(f"presence: {exc!r}") from exc

    async def take_sent(self, trip_id: str) -> set[int]:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.smembers(self._sent + trip_id)
                pipe.delete(self._sent + trip_id)
                members, _ = await pipe.execute()
        except RedisError as exc:
            raise BrokerUnavailable(f"presence: {exc!r}") from exc
        return {int(m) for m in members}

    async def close(self) -> None:
        await self._redis.aclose()
