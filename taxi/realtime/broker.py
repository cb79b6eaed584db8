"""Brokers carry a group's events to every worker that has a member of the group.

``RedisBroker`` keeps one pub/sub connection per worker, subscribed only to the channels of groups with a
local member; a publish is one PUBLISH whatever the number of sockets. ``LocalBroker`` is the same
interface inside one process, for the embedded single-worker default.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.connection import parse_url
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from taxi.errors import BrokerUnavailable
from taxi.realtime.meter import NO_METER, Meter

log = logging.getLogger("taxi.realtime")

Deliver = Callable[[str, str], object]  # (group, payload) -> delivered locally
# What ``deliver`` is given as the group of a control message (to every worker of the deployment, whatever
# groups it has members of). No group is ever called this: group names never start with "!".
CONTROL = "!control"


def channel_namespace(url: str, prefix: str) -> str:
    """``<prefix>db<N>:``, the start of every channel of a deployment on the Redis database N of ``url``.

    Pub/sub ignores the database number (a PUBLISH on /13 reaches subscribers on /12), so it is part of the
    channel name: deployments that differ in database number or in prefix never share a channel.
    """
    return f"{prefix}db{parse_url(url).get('db') or 0}:"


def redis_retry() -> Retry:
    """Three retries of a connection error, 50 ms to 0.5 s apart: enough to ride over a restart's stale sockets."""
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), 3)


class Broker(Protocol):
    on_reconnect: Callable[[], object] | None  # called once the subscriptions are back after an outage

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def subscribe(self, group: str) -> None:
        """Return once events published to ``group`` from now on reach this worker."""

    def unsubscribe(self, group: str) -> None:
        """Stop receiving ``group`` (its last local member left). Never blocks."""

    async def publish(self, group: str, payload: str) -> None:
        """Send ``payload`` to every worker subscribed to ``group``; BrokerUnavailable if it cannot."""

    async def publish_control(self, payload: str) -> None:
        """Send ``payload`` to every worker (delivered as group ``CONTROL``); BrokerUnavailable if it cannot."""


class LocalBroker:
    """The in-process broker: publishing is local delivery. Valid for one worker only."""

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self.on_reconnect: Callable[[], object] | None = None  # never called: nothing to lose the connection

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def subscribe(self, group: str) -> None:
        return None

    def unsubscribe(self, group: str) -> None:
        return None

    async def publish(self, group: str, payload: str) -> None:
        self._deliver(group, payload)

    async def publish_control(self, payload: str) -> None:
        self._deliver(CONTROL, payload)


class RedisBroker:
    """Redis pub/sub for one worker: SUBSCRIBE on a group's first local member, UNSUBSCRIBE on its last.

    Commands go out in order through one control task, so a leave followed by a join ends subscribed.
    ``subscribe`` waits for Redis's confirmation: after it returns, no later PUBLISH can miss this worker.
    After a lost connection the reader keeps trying; redis-py resubscribes every channel on reconnect.
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        deliver: Deliver,
        *,
        confirm_timeout: float = 5.0,
        publish_timeout: float = 2.0,
        meter: Meter = NO_METER,
    ) -> None:
        self._url = url
        self._meter = meter
        self._namespace = channel_namespace(url, prefix)
        self._prefix = f"{self._namespace}group:"
        self._control_channel = f"{self._namespace}control"
        self._deliver = deliver
        self._confirm_timeout = confirm_timeout
        self._publish_timeout = publish_timeout
        self._redis: aioredis.Redis | None = None
        self._pubsub: Any = None
        # (action, channel, the future a subscribe is for): a subscribe whose future is no longer the wanted one
        # was superseded (its group was left and joined again meanwhile) and is skipped.
        self._commands: asyncio.Queue[tuple[str, str, asyncio.Future[None] | None]] = asyncio.Queue()
        self._wanted: dict[str, asyncio.Future[None]] = {}  # channel -> confirmed when Redis says so
        self._awaiting: dict[str, collections.deque[asyncio.Future[None]]] = collections.defaultdict(collections.deque)
        self._tasks: list[asyncio.Task[None]] = []
        self._down = False
        self._stopping = False
        self.on_reconnect: Callable[[], object] | None = None

    async def start(self) -> None:
        self._redis = aioredis.from_url(
            self._url,
            decode_responses=True,
            # A pool built by from_url does not retry; after a Redis restart every pooled connection would fail
            # its next command once. Retry connection errors a few times with a short backoff instead.
            retry=redis_retry(),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
            health_check_interval=15,
            socket_connect_timeout=self._publish_timeout,
            socket_timeout=self._publish_timeout,
            socket_keepalive=True,
        )
        self._pubsub = self._redis.pubsub()
        # get_message() needs a subscription to read from (redis-py raises otherwise): a private control channel.
        await self._pubsub.subscribe(f"{self._namespace}worker:{uuid.uuid4().hex}")
        # Every worker hears the deployment's control messages (e.g. "close this user's sockets").
        await self._pubsub.subscribe(self._control_channel)
        # Registered after the first connection, so it hears only the connections made again.
        self._pubsub.connection.register_connect_callback(self._connected_again)
        self._tasks = [
            asyncio.create_task(self._read(), name="redis-reader"),
            asyncio.create_task(self._control(), name="redis-control"),
        ]

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            # redis-py may absorb a cancellation inside a read; the loops also check _stopping.
            _, pending = await asyncio.wait(self._tasks, timeout=2)
            for task in pending:
                log.warning("redis broker task %s did not stop in time", task.get_name())
        self._tasks = []
        for fut in self._wanted.values():
            if not fut.done():
                fut.cancel()
        if self._pubsub is not None and self._pubsub.connection is not None:
            self._pubsub.connection.deregister_connect_callback(self._connected_again)
        for closeable in (self._pubsub, self._redis):
            if closeable is not None:
                try:
                    await asyncio.wait_for(closeable.aclose(), 2)
                except (TimeoutError, RedisError, OSError) as exc:
                    log.warning("closing the redis connection failed: %r", exc)

    def channel(self, group: str) -> str:
        return self._prefix + group

    async def subscribe(self, group: str) -> None:
        channel = self.channel(group)
        fut = self._wanted.get(channel)
        if fut is None or _failed(fut):
            fut = self._ask(channel)
        if fut.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(fut), self._confirm_timeout)
        except BrokerUnavailable:
            raise
        except TimeoutError:
            raise BrokerUnavailable(f"Redis did not confirm the subscription to {group!r} in time") from None

    def _ask(self, channel: str) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._wanted[channel] = fut
        self._commands.put_nowait(("subscribe", channel, fut))
        return fut

    def unsubscribe(self, group: str) -> None:
        channel = self.channel(group)
        if self._wanted.pop(channel, None) is not None:
            self._commands.put_nowait(("unsubscribe", channel, None))

    async def publish(self, group: str, payload: str) -> None:
        assert self._redis is not None, "broker not started"
        try:
            await asyncio.wait_for(self._redis.publish(self.channel(group), payload), self._publish_timeout)
        except (TimeoutError, RedisError, OSError) as exc:
            raise BrokerUnavailable(f"could not publish to {group!r}: {exc!r}") from None

    async def publish_control(self, payload: str) -> None:
        assert self._redis is not None, "broker not started"
        try:
            await asyncio.wait_for(self._redis.publish(self._control_channel, payload), self._publish_timeout)
        except (TimeoutError, RedisError, OSError) as exc:
            raise BrokerUnavailable(f"could not publish a control message: {exc!r}") from None

    @property
    def subscribed_groups(self) -> list[str]:
        """Groups whose channel this worker holds a subscription for (or is subscribing to)."""
        return [c[len(self._prefix) :] for c in self._wanted]

    async def _control(self) -> None:
        """Send SUBSCRIBE/UNSUBSCRIBE in the order they were asked for."""
        while not self._stopping:
            action, channel, fut = await self._commands.get()
            try:
                if action == "subscribe":
                    if fut is None or self._wanted.get(channel) is not fut or fut.done():
                        continue  # superseded: left (and maybe joined again) before we got to it
                    self._awaiting[channel].append(fut)
                    await self._pubsub.subscribe(channel)
                else:
                    await self._pubsub.unsubscribe(channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis is down: fail the waiters; the next join asks again
                log.warning("redis %s %s failed: %r", action, channel, exc)
                waiters = self._awaiting.pop(channel, collections.deque())
                for fut in waiters:
                    if not fut.done():
                        fut.set_exception(BrokerUnavailable(repr(exc)))
                        fut.exception()  # retrieved: no "never retrieved" noise if nobody waits any more

    async def _read(self) -> None:
        """The receive loop: wait for a message, note a reconnection, hand the message on."""
        backoff = _Backoff()
        while not self._stopping:
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # ConnectionError, TimeoutError, ...: redis-py reconnects on the next read
                self._connection_lost(exc)
                await asyncio.sleep(backoff.next())
                continue
            if self._down:  # the connection was made again on this read (and _connected_again has run)
                self._down = False
                backoff.reset()
            if message is not None:
                self._dispatch(message)

    def _connection_lost(self, exc: Exception) -> None:
        if not self._down:
            self._down = True
            log.warning("redis pub/sub connection lost (%r); reconnecting", exc)

    def _reconnected(self) -> None:
        """redis-py resubscribed what it had: ask again for what failed while Redis was away, and drop what it
        resubscribed although its last member left meanwhile (that UNSUBSCRIBE was lost)."""
        self._meter.broker_reconnected()
        for channel in [channel for channel, fut in self._wanted.items() if _failed(fut)]:
            self._ask(channel)
        for channel in list(self._pubsub.channels):
            name = channel.decode() if isinstance(channel, bytes) else channel
            if name.startswith(self._prefix) and name not in self._wanted:
                self._commands.put_nowait(("unsubscribe", name, None))
        log.warning("redis pub/sub reconnected; %d group channels resubscribed", len(self._wanted))

    async def _connected_again(self, connection: object) -> None:
        """redis-py made the pub/sub connection again and has just resubscribed (on its own connect callback,
        called before this one). It may do so inside a read that never failed for us, when Redis came back at
        once: this is the one place that hears of every reconnection. Whatever was published while the
        connection was down never came, so the members are told (``on_reconnect``)."""
        self._reconnected()
        if self.on_reconnect is not None:
            try:
                self.on_reconnect()
            except Exception:
                log.exception("the reconnection hook failed")

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        if kind == "message" and channel.startswith(self._prefix):
            try:
                self._deliver(channel[len(self._prefix) :], message["data"])
            except Exception:
                log.exception("delivering a message on %s failed", channel)
        elif kind == "message" and channel == self._control_channel:
            try:
                self._deliver(CONTROL, message["data"])
            except Exception:
                log.exception("handling a control message failed")
        elif kind == "subscribe":
            self._confirm(channel)

    def _confirm(self, channel: str) -> None:
        """Redis confirmed a SUBSCRIBE: release the oldest join waiting for it."""
        waiters = self._awaiting.get(channel)
        if not waiters:
            return
        fut = waiters.popleft()
        if not waiters:
            del self._awaiting[channel]  # no empty entries left behind per channel ever used
        if not fut.done():
            fut.set_result(None)


class _Backoff:
    """Waits between reconnection attempts: 0.1 s doubling to 2 s."""

    def __init__(self) -> None:
        self.delay = 0.1

    def next(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, 2.0)
        return delay

    def reset(self) -> None:
        self.delay = 0.1


def _failed(fut: asyncio.Future[None]) -> bool:
    return fut.done() and (fut.cancelled() or fut.exception() is not None)
