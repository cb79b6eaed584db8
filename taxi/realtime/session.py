"""One connected socket's outbound side: a bounded queue drained by a writer task that exists only while there is
something to drain.

Broadcasts never wait for a slow client: ``offer`` writes straight to an idle socket or enqueues. A client that
lets its queue fill up is disconnected (code 1013, "try again later") instead of slowing its groups down or
growing memory. An idle socket holds no queue and no task: thousands of waiting phones cost only their sockets.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import uuid
from collections.abc import Awaitable, Callable

from taxi.realtime.meter import NO_METER, Meter

log = logging.getLogger("taxi.realtime")

TOO_SLOW = 1013
_CLOSE = "\x00close"  # queue sentinel (a real frame is JSON and never looks like this)


class Session:
    """The outbound queue of one socket. ``send`` writes one text frame; ``abort`` drops the connection now.

    ``user`` is whose socket it is and ``version`` the protocol version it speaks: deliveries can be limited by
    either. Besides the queue, a socket has "latest" slots: a frame offered under a key replaces the one still
    waiting under it, and is written whenever the queue is empty (positions: a late reader gets the newest).
    """

    __slots__ = (
        "_abort",
        "_closing",
        "_latest",
        "_meter",
        "_queue",
        "_send",
        "_size",
        "_started",
        "_write_now",
        "_writer",
        "closed",
        "groups",
        "id",
        "label",
        "user",
        "version",
    )

    def __init__(
        self,
        send: Callable[[str], Awaitable[None]],
        abort: Callable[[int, str], object],
        queue_size: int,
        label: str = "",
        write_now: Callable[[str], bool] | None = None,
        user: int | None = None,
        version: int = 1,
        meter: Meter = NO_METER,
    ) -> None:
        self.id = uuid.uuid4().hex
        self.label = label
        self.user = user
        self.version = version
        self.groups: set[str] = set()
        self.closed = False
        self._send = send
        self._abort = abort
        self._size = queue_size
        self._queue: collections.deque[str] | None = None  # made on first use: most sockets never queue
        self._latest: dict[str, str] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._started = False
        self._closing: tuple[int, str] | None = None
        self._write_now = write_now
        self._meter = meter

    def start(self) -> None:
        """Allow writing (frames offered before this wait in the queue, in order)."""
        self._started = True
        self._wake()

    def _idle(self) -> bool:
        return not self._queue and self._writer is None

    def offer(self, text: str) -> bool:
        """Queue one frame; on overflow disconnect the client (it must reconnect and re-fetch). Never blocks."""
        if self.closed:
            return False
        # Nothing queued and the socket idle: write it now, without a task (the common case of a broadcast, where
        # this runs once per member). Order is kept: nothing is waiting ahead of it.
        if self._started and self._write_now is not None and self._idle() and self._write_now(text):
            self._meter.frame_out(text)
            return True
        queue = self._queue
        if queue is None:
            queue = self._queue = collections.deque()
        if len(queue) >= self._size:
            log.warning("socket %s (%s) fell %d frames behind: disconnecting it", self.id[:8], self.label, self._size)
            self._meter.slow_consumer()
            self.close(TOO_SLOW, "too slow: reconnect and fetch your trips again")
            return False
        queue.append(text)
        self._wake()
        return True

    def offer_latest(self, key: str, text: str) -> bool:
        """Send ``text`` unless a newer frame of the same ``key`` comes before it can be written. Never blocks,
        never queues behind itself: only the newest frame of each key waits, after whatever is queued."""
        if self.closed:
            return False
        direct = not self._latest and self._started and self._write_now is not None and self._idle()
        if direct and self._write_now is not None and self._write_now(text):
            self._meter.frame_out(text)
            return True
        if self._latest is None:
            self._latest = {}
        self._latest.pop(key, None)  # re-inserted last: keys are written in the order they last changed
        self._latest[key] = text
        self._wake()
        return True

    def close_when_sent(self, code: int, reason: str) -> None:
        """Close with ``code`` once the frames queued so far have been written (e.g. a last error message)."""
        if not self.closed:
            self._closing = (code, reason)
            if self._queue is None:
                self._queue = collections.deque()
            self._queue.append(_CLOSE)
            self._wake()

    def close(self, code: int, reason: str) -> None:
        """Stop writing and drop the connection with ``code``; safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        self.stop()
        self._abort(code, reason)

    def stop(self) -> None:
        """Stop the writer task (the socket is closing anyway). Synchronous, for ``finally`` blocks."""
        self.closed = True
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()

    def _wake(self) -> None:
        """Start the writer if there is something to write and none is running."""
        if self._writer is None and self._started and not self.closed and (self._queue or self._latest):
            self._writer = asyncio.create_task(self._drain(), name=f"ws-writer-{self.id[:8]}")

    async def _drain(self) -> None:
        try:
            while not self.closed:
                queue, latest = self._queue, self._latest
                if queue:
                    text = queue.popleft()
                    if text is _CLOSE and self._closing is not None:
                        self.close(*self._closing)
                        return
                elif latest:
                    text = latest.pop(next(iter(latest)))
                else:
                    break
                await self._send(text)
                self._meter.frame_out(text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket went away under us: the handler's cleanup follows
            log.debug("socket %s writer stopped: %r", self.id[:8], exc)
            self.closed = True
        # Drained: the writer ends, and the next frame that cannot go out directly starts another.
        self._writer = None
        if self._queue is not None and not self._queue:
            self._queue = None
